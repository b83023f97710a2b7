//! Lets this crate's tests, examples and benches find libtorch at run time without
//! `LD_LIBRARY_PATH`: torch-sys tells its direct dependents where libtorch's `lib/` is.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // Dependents that link libtorch themselves read this back as DEP_SO1S_RPATH_LIBTORCH_LIB.
        println!("cargo:libtorch_lib={lib}");
    }
}
