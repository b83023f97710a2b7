//! Adds an rpath to libtorch (found by so1s-core's build script) so these binaries run
//! without `LD_LIBRARY_PATH`. The examples and benches crates use this script too.
fn main() {
    if let Ok(lib) = std::env::var("DEP_SO1S_RPATH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
