//! Adds an rpath to libtorch (found by so1s-core's build script) so these binaries run
//! without `LD_LIBRARY_PATH`. The examples and benches crates use this script too.
//!
//! Also turns on the real-cluster tests (`cfg(so1s_e2e_kube)`) when a cluster is configured:
//! `KUBECONFIG` or `SO1S_E2E_KUBE` set at build time. Without one they are ignored, with the
//! reason in their `#[ignore]`.
fn main() {
    if let Ok(lib) = std::env::var("DEP_SO1S_RPATH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    println!("cargo::rustc-check-cfg=cfg(so1s_e2e_kube)");
    println!("cargo:rerun-if-env-changed=KUBECONFIG");
    println!("cargo:rerun-if-env-changed=SO1S_E2E_KUBE");
    if std::env::var_os("KUBECONFIG").is_some() || std::env::var_os("SO1S_E2E_KUBE").is_some() {
        println!("cargo:rustc-cfg=so1s_e2e_kube");
    }
}
