//! Adds an rpath to libtorch (torch-sys, a direct dependency with the `inference` feature,
//! says where it is) so these binaries run without `LD_LIBRARY_PATH`. The examples and
//! benches crates use this script too.
//!
//! Also turns on the tests that need something outside cargo, each by what is set in the
//! environment at build time (scripts/test.sh sets the first four). Without it they are
//! ignored, with the reason in their `#[ignore]`; with it they run, and fail if the thing is
//! missing when they run:
//!
//! - `cfg(so1s_docker)`: a Docker engine, `DOCKER_HOST` set (the docker backend's tests);
//! - `cfg(so1s_k8s_validate)`: the manifest validator, `SO1S_K8S_VALIDATE` set to the path of
//!   `kubernetes-validate` (absolute, or relative to the workspace), or to `1` for the one
//!   scripts/setup.sh installs in `.cache/venv-k8s`; the tests read the path from
//!   `SO1S_K8S_VALIDATE_BIN`;
//! - `cfg(so1s_oip_client)`: Triton's Python client, `SO1S_OIP_CLIENT` set to the python of
//!   the venv that has it (absolute, or relative to the workspace), or to `1` for the one
//!   scripts/setup.sh makes in `.cache/venv-oip`; the tests read the path from
//!   `SO1S_OIP_PYTHON`;
//! - `cfg(so1s_browser)`: headless Chromium and its WebDriver, `SO1S_CHROMEDRIVER` set to
//!   the path of `chromedriver` (or `1` for Debian's `/usr/bin/chromedriver`, which
//!   scripts/browser.sh installs); the dashboard's test reads it from
//!   `SO1S_CHROMEDRIVER_BIN`;
//! - `cfg(so1s_e2e_kube)`: a Kubernetes cluster, `SO1S_E2E_KUBE` set to the name of the
//!   kubeconfig context to test against (the test reads it from `SO1S_E2E_KUBE_CONTEXT`).
//!   Only that variable turns it on: `KUBECONFIG`, set on most developers' machines, never
//!   does, and the test never uses whatever context happens to be current.
//!
//! Only environment variables are watched (`rerun-if-env-changed`), never a path that may be
//! missing: cargo reruns a build script on every build while a watched path does not exist,
//! and that would relink every test binary of the crate each time.
use std::path::{Path, PathBuf};

fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    println!("cargo::rustc-check-cfg=cfg(so1s_e2e_kube)");
    println!("cargo::rustc-check-cfg=cfg(so1s_docker)");
    println!("cargo::rustc-check-cfg=cfg(so1s_k8s_validate)");
    println!("cargo::rustc-check-cfg=cfg(so1s_oip_client)");
    println!("cargo::rustc-check-cfg=cfg(so1s_browser)");
    if let Some(context) = set("SO1S_E2E_KUBE") {
        println!("cargo:rustc-cfg=so1s_e2e_kube");
        println!("cargo:rustc-env=SO1S_E2E_KUBE_CONTEXT={context}");
    }
    if set("DOCKER_HOST").is_some() {
        println!("cargo:rustc-cfg=so1s_docker");
    }
    if let Some(validator) = set("SO1S_K8S_VALIDATE") {
        let path = tool(&validator, ".cache/venv-k8s/bin/kubernetes-validate");
        println!("cargo:rustc-cfg=so1s_k8s_validate");
        println!("cargo:rustc-env=SO1S_K8S_VALIDATE_BIN={}", path.display());
    }
    if let Some(client) = set("SO1S_OIP_CLIENT") {
        let path = tool(&client, ".cache/venv-oip/bin/python");
        println!("cargo:rustc-cfg=so1s_oip_client");
        println!("cargo:rustc-env=SO1S_OIP_PYTHON={}", path.display());
    }
    if let Some(driver) = set("SO1S_CHROMEDRIVER") {
        let path = if driver == "1" {
            PathBuf::from("/usr/bin/chromedriver")
        } else {
            tool(&driver, "")
        };
        println!("cargo:rustc-cfg=so1s_browser");
        println!("cargo:rustc-env=SO1S_CHROMEDRIVER_BIN={}", path.display());
    }
}

/// A tool's path from its variable: `1` for `default` (in the workspace), else the value,
/// absolute or relative to the workspace.
fn tool(value: &str, default: &str) -> PathBuf {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let workspace = Path::new(&manifest_dir).join("..");
    if value == "1" {
        workspace.join(default)
    } else {
        workspace.join(PathBuf::from(value))
    }
}

/// The variable's value if it is set and not empty; watched either way.
fn set(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    std::env::var(name).ok().filter(|value| !value.is_empty())
}
