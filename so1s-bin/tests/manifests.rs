//! `so1s manifests`: what it prints is valid against the Kubernetes OpenAPI schemas
//! (kubernetes-validate, strict, Kubernetes 1.32 — the oldest API so1s supports), and the
//! copies committed under deploy/ are what it prints.

use std::path::{Path, PathBuf};
use std::process::Command;

fn so1s(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_so1s"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "so1s {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The printed manifests, as committed under deploy/ (the install reads the admin token from
/// an existing Secret: a committed file holds no token), and an install with a generated
/// token (validated, not committed).
fn printed() -> Vec<(&'static str, String)> {
    vec![
        (
            "deploy/install.yaml",
            so1s(&[
                "manifests",
                "install",
                "--admin-token-secret",
                "so1s-admin-token",
            ]),
        ),
        (
            "install-generated-token.yaml",
            so1s(&["manifests", "install"]),
        ),
        (
            "deploy/model-minilm.yaml",
            so1s(&[
                "manifests",
                "model",
                "minilm",
                "--image",
                "registry.example.com/so1s/so1s/minilm:v1",
                "--default",
            ]),
        ),
        (
            "deploy/model-minilm-split.yaml",
            so1s(&[
                "manifests",
                "model",
                "minilm",
                "--image",
                "registry.example.com/so1s/so1s/minilm:v1",
                "--canary-image",
                "registry.example.com/so1s/so1s/minilm:v2",
                "--canary-version",
                "v2",
                "--canary-weight",
                "30",
                "--autoscale",
                "1:4:70",
                "--default",
            ]),
        ),
    ]
}

/// Runs when `SO1S_K8S_VALIDATE` is set at build time (`cfg(so1s_k8s_validate)`, see
/// so1s-bin/build.rs; scripts/test.sh sets it), ignored with the reason otherwise; then a
/// validator missing at its path fails the test.
#[test]
#[cfg_attr(
    not(so1s_k8s_validate),
    ignore = "needs kubernetes-validate: set SO1S_K8S_VALIDATE=1 (the one scripts/setup.sh installs in .cache/venv-k8s) or its path when building the tests (scripts/test.sh does)"
)]
fn printed_manifests_are_valid_kubernetes_objects() {
    // Set by so1s-bin/build.rs with cfg(so1s_k8s_validate); absent only under --ignored.
    let Some(validator) = option_env!("SO1S_K8S_VALIDATE_BIN") else {
        panic!("SO1S_K8S_VALIDATE was not set when building the tests: no validator to run")
    };
    let validator = PathBuf::from(validator);
    assert!(
        validator.is_file(),
        "SO1S_K8S_VALIDATE was set when building the tests, but {} is missing: \
         scripts/setup.sh installs it",
        validator.display()
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, yaml) in printed() {
        let file = dir.path().join(Path::new(name).file_name().unwrap());
        std::fs::write(&file, &yaml).unwrap();
        let output = Command::new(&validator)
            .args(["--strict", "-k", "1.32.0"])
            .arg(&file)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{name}:\n{said}");
        assert!(
            !said.contains("ERROR") && !said.contains("WARN"),
            "{name}:\n{said}"
        );
        let documents = yaml.matches("---\n").count();
        assert_eq!(
            said.matches(" passed for resource ").count(),
            documents,
            "{said}"
        );
    }
}

#[test]
fn the_committed_manifests_are_what_so1s_prints() {
    for (name, yaml) in printed()
        .into_iter()
        .filter(|(n, _)| n.starts_with("deploy/"))
    {
        let committed =
            std::fs::read_to_string(repo().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            committed, yaml,
            "{name} is stale: regenerate it with the command in deploy/README.md"
        );
    }
}

#[test]
fn each_install_generates_its_own_admin_token_in_a_secret() {
    let token = |yaml: &str| -> String {
        let docs: Vec<serde_json::Value> = yaml
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect();
        let secret = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
        assert_eq!(secret["metadata"]["name"], "so1s-admin-token");
        secret["stringData"]["token"].as_str().unwrap().to_owned()
    };
    let (first, second) = (
        token(&so1s(&["manifests", "install"])),
        token(&so1s(&["manifests", "install"])),
    );
    assert!(first.starts_with("so1s_") && first.len() == 69, "{first}");
    assert_ne!(first, second);
    let existing = so1s(&["manifests", "install", "--admin-token-secret", "mine"]);
    assert!(!existing.contains("kind: Secret"));
    assert!(existing.contains("name: mine"));
    let socket = Command::new(env!("CARGO_BIN_EXE_so1s"))
        .args([
            "manifests",
            "install",
            "--build-mode",
            "docker-socket",
            "--admin-token-secret",
            "s",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&socket.stderr).contains("warning: the docker-socket"));
    assert!(String::from_utf8_lossy(&socket.stdout)
        .contains("pod-security.kubernetes.io/enforce: privileged"));
}

#[test]
fn a_model_manifest_names_its_image_version_and_paths() {
    let yaml = so1s(&[
        "manifests",
        "model",
        "bert-small",
        "--image",
        "reg.example/so1s/bert-small:v7",
        "--model-version",
        "v7",
        "--namespace",
        "ml",
        "--ingress-class",
        "traefik",
    ]);
    for expected in [
        "kind: Deployment",
        "kind: Service",
        "kind: Ingress",
        "namespace: ml",
        "image: reg.example/so1s/bert-small:v7",
        "so1s.io/version: v7",
        "ingressClassName: traefik",
        "path: /inference/bert-small/predict",
        "maxUnavailable: 0",
    ] {
        assert!(yaml.contains(expected), "{expected} missing:\n{yaml}");
    }
    assert!(
        !yaml.contains("path: /inference/predict"),
        "not the default model"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_so1s"))
        .args(["manifests", "model", "Bad_Name", "--image", "x"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid model name"));
}
