//! Lets this crate's tests find libtorch at run time without `LD_LIBRARY_PATH`: torch-sys
//! tells its direct dependents where libtorch's `lib/` is (`DEP_TCH_LIBTORCH_LIB`). Crates
//! whose binaries link this one depend on torch-sys too and do the same (so1s-bin/build.rs).
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
