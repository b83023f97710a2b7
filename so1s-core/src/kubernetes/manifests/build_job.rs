//! A version's build Job (the so1s image prepares the context, Kaniko or the node's Docker
//! socket builds and pushes) and the Dockerfile of a model image built in the cluster.

use super::common::{
    env, meta, model_labels, object_name, restricted, tmp_volume, ClusterSettings,
    ANNOTATION_IMAGE, ANNOTATION_VERSION, APP_COMPONENT,
};
use crate::build::image::{self, LABEL_VERSION};
use crate::model::{ModelName, VersionId};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, HostPathVolumeSource, PersistentVolumeClaimVolumeSource,
    PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::time::Duration;

/// How build Jobs make images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildMode {
    /// The seed's way: `docker build` + `docker push` through the node's Docker socket
    /// (host path). Needs Docker on the nodes and hands the Job root on the node.
    DockerSocket,
    /// Kaniko: builds and pushes from inside the pod, no daemon, no privileged socket.
    Kaniko,
}

/// What a build Job needs to know.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// The so1s image: it unpacks, checks and smoke-tests the archive (init container), and
    /// it is the model images' base (its layers are on the nodes already).
    pub so1s_image: String,
    /// Push model images under this repository prefix (`registry.example.com/team`).
    pub push_to: String,
    /// How the image is built.
    pub mode: BuildMode,
    /// The image of the build step: a Docker CLI for [`BuildMode::DockerSocket`], the Kaniko
    /// executor for [`BuildMode::Kaniko`].
    pub builder_image: String,
    /// The PersistentVolumeClaim holding the model store.
    pub store_claim: String,
    /// Secret with a Docker `config.json` for the push (mounted for the builder).
    pub push_secret: Option<String>,
    /// Longest a build may run.
    pub deadline: Duration,
    /// How long a finished Job stays for its logs.
    pub ttl_after_finished: Duration,
}

impl BuildSettings {
    /// Defaults for the given so1s image and registry prefix.
    pub fn new(so1s_image: impl Into<String>, push_to: impl Into<String>, mode: BuildMode) -> Self {
        Self {
            so1s_image: so1s_image.into(),
            push_to: push_to.into(),
            builder_image: match mode {
                BuildMode::DockerSocket => "docker:27-cli".into(),
                BuildMode::Kaniko => "gcr.io/kaniko-project/executor:v1.23.2".into(),
            },
            mode,
            store_claim: "so1s-store".into(),
            push_secret: None,
            deadline: Duration::from_secs(1800),
            ttl_after_finished: Duration::from_secs(3600),
        }
    }
}

/// The build Job's name: one per model version, so a retry never builds a version twice.
pub fn build_job_name(model: &ModelName, version: VersionId) -> String {
    object_name(&["so1s-build", model.as_str(), &version.to_string()])
}

/// The Job that builds and pushes `reference` from the archive at `archive` (a path inside
/// the store claim). The init container (the so1s image) unpacks the archive into a
/// workspace, checks and smoke-tests the model and writes the Dockerfile; the build container
/// builds and pushes.
pub fn build_job(
    settings: &ClusterSettings,
    build: &BuildSettings,
    model: &ModelName,
    version: VersionId,
    sha256: &str,
    archive: &str,
    reference: &str,
) -> Job {
    let mut labels = model_labels(model);
    labels.insert(APP_COMPONENT.to_owned(), "build".to_owned());
    labels.insert(LABEL_VERSION.to_owned(), version.to_string());
    let workspace = VolumeMount {
        name: "workspace".into(),
        mount_path: "/workspace".into(),
        ..Default::default()
    };
    let (tmp, tmp_mount) = tmp_volume();
    let prepare = Container {
        name: "prepare".into(),
        image: Some(build.so1s_image.clone()),
        command: Some(vec!["so1s".into()]),
        args: Some(vec![
            "context".into(),
            "--archive".into(),
            format!("/store/{archive}"),
            "--model".into(),
            model.to_string(),
            "--version".into(),
            version.to_string(),
            "--sha256".into(),
            sha256.into(),
            "--base-image".into(),
            build.so1s_image.clone(),
            "--out".into(),
            "/workspace".into(),
        ]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "store".into(),
                mount_path: "/store".into(),
                read_only: Some(true),
                ..Default::default()
            },
            workspace.clone(),
            tmp_mount,
        ]),
        security_context: Some(restricted()),
        ..Default::default()
    };
    let mut volumes = vec![
        Volume {
            name: "store".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: build.store_claim.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        },
        Volume {
            name: "workspace".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        tmp,
    ];
    let mut mounts = vec![workspace];
    let (command, args, env_vars) = match build.mode {
        BuildMode::DockerSocket => {
            volumes.push(Volume {
                name: "docker-socket".into(),
                host_path: Some(HostPathVolumeSource {
                    path: "/var/run/docker.sock".into(),
                    type_: Some("Socket".into()),
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "docker-socket".into(),
                mount_path: "/var/run/docker.sock".into(),
                ..Default::default()
            });
            (
                Some(vec!["sh".into(), "-ec".into()]),
                Some(vec![format!(
                    "docker build --pull=false -t {reference} /workspace && docker push {reference}"
                )]),
                Some(vec![env("DOCKER_CONFIG", "/docker-config")]),
            )
        }
        BuildMode::Kaniko => (
            None,
            Some(vec![
                "--context=dir:///workspace".into(),
                "--dockerfile=/workspace/Dockerfile".into(),
                format!("--destination={reference}"),
                "--snapshot-mode=redo".into(),
            ]),
            Some(vec![env("DOCKER_CONFIG", "/docker-config")]),
        ),
    };
    if let Some(secret) = &build.push_secret {
        volumes.push(Volume {
            name: "docker-config".into(),
            secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                    key: ".dockerconfigjson".into(),
                    path: "config.json".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "docker-config".into(),
            mount_path: "/docker-config".into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let builder = Container {
        name: "build".into(),
        image: Some(build.builder_image.clone()),
        command,
        args,
        env: env_vars,
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            annotations: Some(BTreeMap::from([
                (ANNOTATION_VERSION.to_owned(), version.to_string()),
                (ANNOTATION_IMAGE.to_owned(), reference.to_owned()),
            ])),
            ..meta(
                build_job_name(model, version),
                settings,
                labels.clone(),
                None,
            )
        },
        spec: Some(JobSpec {
            backoff_limit: Some(1),
            active_deadline_seconds: Some(build.deadline.as_secs() as i64),
            ttl_seconds_after_finished: Some(build.ttl_after_finished.as_secs() as i32),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    init_containers: Some(vec![prepare]),
                    containers: vec![builder],
                    volumes: Some(volumes),
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Dockerfile of a model image built in the cluster: the so1s image as the base.
pub fn cluster_model_dockerfile(
    so1s_image: &str,
    model: &ModelName,
    version: VersionId,
    sha256: &str,
) -> String {
    image::model_dockerfile(
        so1s_image,
        model,
        version,
        // The reference names the namespace, the cluster's instance.
        &image::model_image_labels(None, model, version, sha256),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::manifests::test_support::{is_dns_label, minilm, v};

    #[test]
    fn build_job_names_are_dns_labels_even_for_long_models() {
        assert_eq!(build_job_name(&minilm(), v(12)), "so1s-build-minilm-v12");
        let long = ModelName::parse(&"m".repeat(63)).unwrap();
        let other = ModelName::parse(&format!("{}x", "m".repeat(62))).unwrap();
        for name in [build_job_name(&long, v(1)), build_job_name(&other, v(1))] {
            assert!(is_dns_label(&name), "{name}");
        }
        assert_ne!(build_job_name(&long, v(1)), build_job_name(&other, v(1)));
        assert_ne!(build_job_name(&long, v(1)), build_job_name(&long, v(2)));
    }

    #[test]
    fn build_jobs_are_bounded_and_read_the_store_read_only() {
        let build = BuildSettings::new("so1s/so1s:1", "reg.example/team", BuildMode::Kaniko);
        let job = build_job(
            &ClusterSettings::default(),
            &build,
            &minilm(),
            v(2),
            "cafe",
            "store/minilm/v2.tar.gz",
            "reg.example/team/so1s/minilm:v2",
        );
        assert_eq!(job.metadata.name.as_deref(), Some("so1s-build-minilm-v2"));
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(1));
        assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
        assert_eq!(spec.active_deadline_seconds, Some(1800));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let prepare = &pod.init_containers.unwrap()[0];
        let args = prepare.args.clone().unwrap();
        assert_eq!(args[0], "context");
        assert!(args.contains(&"/store/store/minilm/v2.tar.gz".to_owned()));
        let store = pod
            .volumes
            .clone()
            .unwrap()
            .into_iter()
            .find(|v| v.name == "store")
            .unwrap();
        let claim = store.persistent_volume_claim.unwrap();
        assert_eq!(
            (claim.claim_name.as_str(), claim.read_only),
            ("so1s-store", Some(true))
        );
        let builder = &pod.containers[0];
        assert!(builder.image.as_deref().unwrap().contains("kaniko"));
        assert!(builder
            .args
            .clone()
            .unwrap()
            .contains(&"--destination=reg.example/team/so1s/minilm:v2".to_owned()));
        assert!(
            pod.volumes.unwrap().iter().all(|v| v.host_path.is_none()),
            "kaniko needs no host socket"
        );

        let mut socket = BuildSettings::new("so1s/so1s:1", "reg", BuildMode::DockerSocket);
        socket.push_secret = Some("regcred".into());
        let job = build_job(
            &ClusterSettings::default(),
            &socket,
            &minilm(),
            v(2),
            "c",
            "a",
            "reg/so1s/minilm:v2",
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        let volumes = pod.volumes.unwrap();
        let host = volumes.iter().find_map(|v| v.host_path.clone()).unwrap();
        assert_eq!(host.path, "/var/run/docker.sock");
        let secret = volumes.iter().find_map(|v| v.secret.clone()).unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("regcred"));
        let script = pod.containers[0].args.clone().unwrap()[0].clone();
        assert!(
            script.contains("docker push reg/so1s/minilm:v2"),
            "{script}"
        );
    }
}
