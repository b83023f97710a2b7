//! The layout of so1s's inference images, as pure functions: names, labels, Dockerfiles and
//! the files of each build context. The Docker builder (and later the Kubernetes build Job)
//! turn these into images; nothing here touches the engine or the disk.
//!
//! Two layers of images:
//! - the **runtime image** `so1s/runtime:<fingerprint>`: `so1s-predict`, the `so1s-probe`
//!   health check, exactly the shared libraries they link (from `ldd`) and the ELF loader, on
//!   top of `scratch` or a configured base. Built once, rebuilt when the binaries change
//!   (the fingerprint changes with them).
//! - a **model image** `so1s/<model>:<version>` per version: the runtime image plus one layer
//!   holding the model directory at `/model`.

use crate::model::{ModelName, VersionId};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the model directory sits in a model image.
pub const MODEL_DIR: &str = "/model";
/// The port `so1s-predict` listens on in a container.
pub const PREDICT_PORT: u16 = 8080;
/// The predict server in the runtime image.
pub const PREDICT_BIN: &str = "/so1s/bin/so1s-predict";
/// The `so1s` command in the so1s image.
pub const SO1S_BIN: &str = "/so1s/bin/so1s";
/// The health check binary in the runtime image.
pub const PROBE_BIN: &str = "/so1s/bin/so1s-probe";
/// The shared libraries' folder in the runtime image.
pub const LIB_DIR: &str = "/so1s/lib";
/// The runtime images' repository.
pub const RUNTIME_REPOSITORY: &str = "so1s/runtime";

/// Label: set on everything so1s creates.
pub const LABEL_MANAGED: &str = "io.so1s.managed";
/// Label: the so1s installation a container belongs to (several can share one engine).
pub const LABEL_INSTANCE: &str = "io.so1s.instance";
/// Label: the model's name.
pub const LABEL_MODEL: &str = "io.so1s.model";
/// Label: the model's version (`v3`).
pub const LABEL_VERSION: &str = "io.so1s.version";
/// Label: sha256 of the uploaded archive a model image was built from.
pub const LABEL_SHA256: &str = "io.so1s.sha256";
/// Label: the fingerprint of a runtime image's files.
pub const LABEL_RUNTIME: &str = "io.so1s.runtime";

/// The health check command of a container: `/readyz` from inside it.
pub fn probe_command() -> Vec<String> {
    vec![
        PROBE_BIN.to_owned(),
        format!("http://127.0.0.1:{PREDICT_PORT}/readyz"),
    ]
}

/// A model image's reference: `so1s/<instance>/<model>:<version>` (the installation's
/// instance id keeps installations that share an engine or a registry apart), under
/// `repository_prefix` when images are pushed to a registry (`registry.example.com/team` →
/// `registry.example.com/team/so1s/...`).
pub fn model_image_reference(
    repository_prefix: Option<&str>,
    instance: &str,
    model: &ModelName,
    version: VersionId,
) -> String {
    match repository_prefix.map(|p| p.trim_end_matches('/')) {
        Some(prefix) if !prefix.is_empty() => {
            format!("{prefix}/so1s/{instance}/{model}:{version}")
        }
        _ => format!("so1s/{instance}/{model}:{version}"),
    }
}

/// The runtime image's reference for a fingerprint.
pub fn runtime_image_reference(fingerprint: &str) -> String {
    format!(
        "{RUNTIME_REPOSITORY}:{}",
        &fingerprint[..16.min(fingerprint.len())]
    )
}

/// The labels of a model image (of installation `instance`, when known).
pub fn model_image_labels(
    instance: Option<&str>,
    model: &ModelName,
    version: VersionId,
    sha256: &str,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_MODEL.to_owned(), model.to_string()),
        (LABEL_VERSION.to_owned(), version.to_string()),
        (LABEL_SHA256.to_owned(), sha256.to_owned()),
    ]);
    if let Some(instance) = instance {
        labels.insert(LABEL_INSTANCE.to_owned(), instance.to_owned());
    }
    labels
}

/// The labels of the runtime image.
pub fn runtime_image_labels(fingerprint: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_RUNTIME.to_owned(), fingerprint.to_owned()),
    ])
}

/// One `LABEL` instruction for all labels (each instruction costs the legacy builder a
/// container), values quoted.
fn label_instruction(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(key, value)| {
            let quoted = serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into());
            format!("{key}={quoted}")
        })
        .collect();
    format!("LABEL {}\n", pairs.join(" "))
}

/// The runtime image's Dockerfile: one layer with every file, then configuration only.
pub fn runtime_dockerfile(base_image: &str, labels: &BTreeMap<String, String>) -> String {
    let probe = serde_json::to_string(&probe_command()).unwrap_or_default();
    format!(
        "FROM {base_image}\n\
         COPY rootfs/ /\n\
         ENV PATH=/so1s/bin LD_LIBRARY_PATH={LIB_DIR} SO1S_HOST=0.0.0.0 SO1S_PORT={PREDICT_PORT} SO1S_MODEL_DIR={MODEL_DIR}\n\
         EXPOSE {PREDICT_PORT}\n\
         HEALTHCHECK --interval=5s --timeout=3s --start-period=120s --retries=3 CMD {probe}\n\
         ENTRYPOINT [\"{PREDICT_BIN}\"]\n\
         {}",
        label_instruction(labels)
    )
}

/// A model image's Dockerfile: the runtime plus one layer, the model directory; then its
/// name, version and labels (configuration only).
pub fn model_dockerfile(
    runtime_image: &str,
    model: &ModelName,
    version: VersionId,
    labels: &BTreeMap<String, String>,
) -> String {
    format!(
        "FROM {runtime_image}\n\
         COPY model/ {MODEL_DIR}/\n\
         ENV SO1S_MODEL_NAME={model} SO1S_MODEL_VERSION={version}\n\
         {}",
        label_instruction(labels)
    )
}

/// The shared objects a binary links, as `ldd` lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkedLibs {
    /// Library name (as the binary asks for it) → the file that provides it.
    pub libs: BTreeMap<String, PathBuf>,
    /// The ELF interpreter (`/lib64/ld-linux-x86-64.so.2`), by its absolute path.
    pub loader: Option<PathBuf>,
}

impl LinkedLibs {
    /// Reads `ldd`'s output. A library `ldd` could not find is an error: the image would not
    /// start.
    pub fn parse_ldd(output: &str) -> Result<Self> {
        let mut linked = LinkedLibs::default();
        for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
            // Drop the load address: `name => /path (0x...)` or `/lib64/ld... (0x...)`.
            let line = match line.rfind(" (0x") {
                Some(at) => &line[..at],
                None => line,
            };
            if let Some((name, path)) = line.split_once(" => ") {
                let path = path.trim();
                if path == "not found" {
                    return Err(Error::Backend(format!(
                        "the predict server links {name}, which ldd cannot find"
                    )));
                }
                if !path.is_empty() {
                    linked
                        .libs
                        .insert(name.trim().to_owned(), PathBuf::from(path));
                }
            } else if line.starts_with('/') {
                linked.loader = Some(PathBuf::from(line));
            } else if line.contains("statically linked") || line.starts_with("linux-vdso") {
                continue;
            } else {
                return Err(Error::Backend(format!(
                    "unexpected line in ldd's output: {line}"
                )));
            }
        }
        Ok(linked)
    }

    /// Adds another binary's libraries.
    pub fn merge(&mut self, other: LinkedLibs) {
        self.libs.extend(other.libs);
        if self.loader.is_none() {
            self.loader = other.loader;
        }
    }
}

/// Where a file of a build context comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Bytes written by so1s (the Dockerfile).
    Text(String),
    /// A file on the host, copied with its mode (symbolic links followed).
    File(PathBuf),
    /// A directory on the host, copied whole (symbolic links followed).
    Tree(PathBuf),
    /// An empty directory with the given mode.
    Dir(u32),
}

/// One entry of a build context: a path inside the tar and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextEntry {
    /// The path in the context, relative (`rootfs/so1s/bin/so1s-predict`).
    pub path: String,
    /// Its content.
    pub source: Source,
}

impl ContextEntry {
    /// An entry at `path` in the context.
    pub fn new(path: impl Into<String>, source: Source) -> Self {
        Self {
            path: path.into(),
            source,
        }
    }
}

/// The runtime image's build context: the Dockerfile and `rootfs/` with the binaries, their
/// libraries and the loader at the path the binaries name.
pub fn runtime_context(
    base_image: &str,
    labels: &BTreeMap<String, String>,
    predict_bin: &Path,
    probe_bin: &Path,
    linked: &LinkedLibs,
) -> Result<Vec<ContextEntry>> {
    let mut entries = vec![
        ContextEntry::new(
            "Dockerfile",
            Source::Text(runtime_dockerfile(base_image, labels)),
        ),
        ContextEntry::new(
            format!("rootfs{PREDICT_BIN}"),
            Source::File(predict_bin.to_owned()),
        ),
        ContextEntry::new(
            format!("rootfs{PROBE_BIN}"),
            Source::File(probe_bin.to_owned()),
        ),
    ];
    entries.extend(rootfs_runtime(linked, "the predict server")?);
    Ok(entries)
}

/// `rootfs/tmp`, the ELF loader and the shared libraries `linked` lists, where the
/// binaries look for them.
fn rootfs_runtime(linked: &LinkedLibs, what: &str) -> Result<Vec<ContextEntry>> {
    let loader = linked
        .loader
        .as_ref()
        .ok_or_else(|| Error::Backend(format!("ldd named no ELF loader for {what}")))?;
    let mut entries = vec![
        ContextEntry::new("rootfs/tmp", Source::Dir(0o1777)),
        ContextEntry::new(
            format!("rootfs{}", loader.display()),
            Source::File(loader.clone()),
        ),
    ];
    for (name, path) in &linked.libs {
        if name.contains('/') || name.starts_with('.') {
            return Err(Error::Backend(format!("unexpected library name {name}")));
        }
        entries.push(ContextEntry::new(
            format!("rootfs{LIB_DIR}/{name}"),
            Source::File(path.clone()),
        ));
    }
    Ok(entries)
}

/// The port the api server listens on in its image.
pub const API_PORT: u16 = 8000;

/// The api-server-only image's Dockerfile: `so1s serve` without the predict server or
/// libtorch, for installations whose builds and models run in Docker or Kubernetes.
pub fn api_server_dockerfile(base_image: &str, labels: &BTreeMap<String, String>) -> String {
    format!(
        "FROM {base_image}\n\
         COPY rootfs/ /\n\
         ENV PATH=/so1s/bin LD_LIBRARY_PATH={LIB_DIR} SO1S_HOST=0.0.0.0 SO1S_PORT={API_PORT}\n\
         EXPOSE {API_PORT}\n\
         ENTRYPOINT [\"{SO1S_BIN}\"]\n\
         CMD [\"serve\"]\n\
         {}",
        label_instruction(labels)
    )
}

/// The api-server-only image's build context: `so1s` (built without the `inference`
/// feature), its libraries and the loader.
pub fn api_server_context(
    base_image: &str,
    labels: &BTreeMap<String, String>,
    so1s_bin: &Path,
    linked: &LinkedLibs,
) -> Result<Vec<ContextEntry>> {
    let mut entries = vec![
        ContextEntry::new(
            "Dockerfile",
            Source::Text(api_server_dockerfile(base_image, labels)),
        ),
        ContextEntry::new(
            format!("rootfs{SO1S_BIN}"),
            Source::File(so1s_bin.to_owned()),
        ),
    ];
    entries.extend(rootfs_runtime(linked, "so1s")?);
    Ok(entries)
}

/// The labels of the so1s image.
pub fn so1s_image_labels(version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (
            "org.opencontainers.image.title".to_owned(),
            "so1s".to_owned(),
        ),
        (
            "org.opencontainers.image.version".to_owned(),
            version.to_owned(),
        ),
    ])
}

/// A model image's build context: the Dockerfile and the model directory.
pub fn model_context(
    runtime_image: &str,
    model: &ModelName,
    version: VersionId,
    labels: &BTreeMap<String, String>,
    model_dir: &Path,
) -> Vec<ContextEntry> {
    vec![
        ContextEntry::new(
            "Dockerfile",
            Source::Text(model_dockerfile(runtime_image, model, version, labels)),
        ),
        ContextEntry::new("model", Source::Tree(model_dir.to_owned())),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffc5a1e2000)
\tlibtorch_cpu.so => /opt/libtorch/lib/libtorch_cpu.so (0x00007f1d1c000000)
\tlibc10.so => /opt/libtorch/lib/libc10.so (0x00007f1d1bf00000)
\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f1d1bc00000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1d1ba00000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f1d2a000000)
";

    fn name(s: &str) -> ModelName {
        ModelName::parse(s).unwrap()
    }

    #[test]
    fn ldd_output_gives_libraries_and_loader() {
        let linked = LinkedLibs::parse_ldd(LDD).unwrap();
        assert_eq!(linked.libs.len(), 4);
        assert_eq!(
            linked.libs["libtorch_cpu.so"],
            Path::new("/opt/libtorch/lib/libtorch_cpu.so")
        );
        assert_eq!(
            linked.loader.as_deref(),
            Some(Path::new("/lib64/ld-linux-x86-64.so.2"))
        );
        assert!(!linked.libs.contains_key("linux-vdso.so.1"));
    }

    #[test]
    fn a_missing_library_is_an_error_naming_it() {
        let output = format!("{LDD}\tlibgomp.so.1 => not found\n");
        let error = LinkedLibs::parse_ldd(&output).unwrap_err().to_string();
        assert!(error.contains("libgomp.so.1"), "{error}");
    }

    #[test]
    fn merging_adds_the_other_binarys_libraries() {
        let mut predict = LinkedLibs::parse_ldd(LDD).unwrap();
        let probe = LinkedLibs::parse_ldd(
            "\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x1)\n\
             \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x2)\n\
             \t/lib64/ld-linux-x86-64.so.2 (0x3)\n",
        )
        .unwrap();
        predict.merge(probe);
        assert_eq!(predict.libs.len(), 5);
        assert!(predict.libs.contains_key("libgcc_s.so.1"));
    }

    #[test]
    fn runtime_context_puts_every_file_under_rootfs() {
        let linked = LinkedLibs::parse_ldd(LDD).unwrap();
        let entries = runtime_context(
            "scratch",
            &runtime_image_labels("f00d"),
            Path::new("/target/so1s-predict"),
            Path::new("/target/so1s-probe"),
            &linked,
        )
        .unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths[0], "Dockerfile");
        for expected in [
            "rootfs/so1s/bin/so1s-predict",
            "rootfs/so1s/bin/so1s-probe",
            "rootfs/lib64/ld-linux-x86-64.so.2",
            "rootfs/so1s/lib/libtorch_cpu.so",
            "rootfs/so1s/lib/libc.so.6",
            "rootfs/tmp",
        ] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {paths:?}"
            );
        }
        assert!(paths[1..].iter().all(|p| p.starts_with("rootfs/")));
        let Source::Text(dockerfile) = &entries[0].source else {
            panic!("the Dockerfile is text");
        };
        assert!(dockerfile.starts_with("FROM scratch\nCOPY rootfs/ /\n"));
        assert!(dockerfile.contains("LD_LIBRARY_PATH=/so1s/lib"));
        assert!(
            dockerfile.contains(r#"CMD ["/so1s/bin/so1s-probe","http://127.0.0.1:8080/readyz"]"#)
        );
        assert!(dockerfile.contains(r#"ENTRYPOINT ["/so1s/bin/so1s-predict"]"#));
        assert!(dockerfile.ends_with("LABEL io.so1s.managed=\"true\" io.so1s.runtime=\"f00d\"\n"));
        assert_eq!(
            dockerfile.matches("COPY").count(),
            1,
            "one filesystem layer"
        );
    }

    #[test]
    fn the_api_server_context_holds_so1s_alone() {
        let linked = LinkedLibs::parse_ldd(LDD).unwrap();
        let entries = api_server_context(
            "scratch",
            &so1s_image_labels("0.1.0"),
            Path::new("/target/so1s"),
            &linked,
        )
        .unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"rootfs/so1s/bin/so1s"), "{paths:?}");
        assert!(paths.contains(&"rootfs/lib64/ld-linux-x86-64.so.2"));
        assert!(
            !paths.iter().any(|p| p.contains("so1s-predict")),
            "{paths:?}"
        );
        let Source::Text(dockerfile) = &entries[0].source else {
            panic!("the Dockerfile is text");
        };
        assert!(dockerfile.contains(r#"ENTRYPOINT ["/so1s/bin/so1s"]"#));
        assert!(dockerfile.contains(r#"CMD ["serve"]"#));
        assert!(dockerfile.contains("SO1S_HOST=0.0.0.0 SO1S_PORT=8000"));
        let mut no_loader = linked.clone();
        no_loader.loader = None;
        let labels = BTreeMap::new();
        assert!(api_server_context("scratch", &labels, Path::new("a"), &no_loader).is_err());
    }

    #[test]
    fn runtime_context_needs_a_loader() {
        let mut linked = LinkedLibs::parse_ldd(LDD).unwrap();
        linked.loader = None;
        let labels = BTreeMap::new();
        assert!(
            runtime_context("scratch", &labels, Path::new("a"), Path::new("b"), &linked).is_err()
        );
    }

    #[test]
    fn model_image_adds_one_layer_on_the_runtime() {
        let v3 = VersionId::parse("v3").unwrap();
        let labels = model_image_labels(Some("prod"), &name("minilm"), v3, "cafe");
        let dockerfile = model_dockerfile(
            "so1s/runtime:0123456789abcdef",
            &name("minilm"),
            v3,
            &labels,
        );
        assert_eq!(
            dockerfile,
            "FROM so1s/runtime:0123456789abcdef\nCOPY model/ /model/\n\
             ENV SO1S_MODEL_NAME=minilm SO1S_MODEL_VERSION=v3\n\
             LABEL io.so1s.instance=\"prod\" io.so1s.managed=\"true\" io.so1s.model=\"minilm\" \
             io.so1s.sha256=\"cafe\" io.so1s.version=\"v3\"\n"
        );
        let entries = model_context(
            "so1s/runtime:x",
            &name("minilm"),
            v3,
            &labels,
            Path::new("/b"),
        );
        assert_eq!(entries[1].source, Source::Tree(PathBuf::from("/b")));
    }

    #[test]
    fn references_and_labels() {
        let v1 = VersionId::parse("v1").unwrap();
        assert_eq!(
            model_image_reference(None, "prod", &name("minilm"), v1),
            "so1s/prod/minilm:v1"
        );
        assert_eq!(
            model_image_reference(
                Some("registry.example.com:5000/team/"),
                "prod",
                &name("minilm"),
                v1
            ),
            "registry.example.com:5000/team/so1s/prod/minilm:v1"
        );
        assert_eq!(
            runtime_image_reference(&"ab".repeat(32)),
            "so1s/runtime:abababababababab"
        );
        let labels = model_image_labels(Some("prod"), &name("minilm"), v1, "cafe");
        assert_eq!(labels["io.so1s.instance"], "prod");
        assert_eq!(labels["io.so1s.model"], "minilm");
        assert_eq!(labels["io.so1s.version"], "v1");
        assert_eq!(labels["io.so1s.sha256"], "cafe");
        assert_eq!(labels["io.so1s.managed"], "true");
    }
}
