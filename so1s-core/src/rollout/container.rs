//! What the Docker rollout asks the engine for, as pure functions: container names, labels,
//! the create request, and where a started container is reached.

use super::Target;
use crate::build::image::{
    probe_command, LABEL_INSTANCE, LABEL_MANAGED, LABEL_MODEL, LABEL_VERSION, PREDICT_PORT,
};
use crate::build::Artifact;
use crate::model::{ModelName, VersionId};
use crate::{Error, Result};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HealthConfig, HostConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use std::collections::HashMap;
use std::time::Duration;

/// How the Docker rollout runs version containers.
#[derive(Debug, Clone)]
pub struct DockerRolloutConfig {
    /// The so1s installation the containers belong to (a label; names include it).
    pub instance: ModelName,
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// CPU limit in cores (`1.5`).
    pub cpus: Option<f64>,
    /// libtorch intra-op threads of the predict server.
    pub threads: Option<usize>,
    /// A Docker network to run on and reach containers by name over (when so1s itself runs
    /// in a container); unset: publish on a free loopback port of the host.
    pub network: Option<String>,
    /// How often Docker runs the health check once a container is up.
    pub health_interval: Duration,
    /// Longest wait for a new container to become ready (also the health check's grace).
    pub ready_timeout: Duration,
    /// Longest wait for the old version's requests to finish before it is stopped.
    pub drain_timeout: Duration,
    /// How long a stopping container gets to finish its requests.
    pub stop_timeout: Duration,
    /// Extra environment of the predict servers.
    pub env: Vec<(String, String)>,
    /// How often a live container's state and `/readyz` are checked.
    pub check_interval: Duration,
    /// What counts as a crash loop (the engine's restart policy does the restarting).
    pub crash_loop: super::CrashLoopRule,
}

impl DockerRolloutConfig {
    /// Defaults for `instance`: 4 GiB, no CPU limit, health check every 5 s.
    pub fn new(instance: ModelName) -> Self {
        Self {
            instance,
            memory_bytes: Some(4 << 30),
            cpus: None,
            threads: None,
            network: None,
            health_interval: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(30),
            env: Vec::new(),
            check_interval: Duration::from_secs(1),
            crash_loop: super::CrashLoopRule::default(),
        }
    }
}

/// The container of a version: `so1s-<instance>-<model>-<version>`.
pub fn container_name(instance: &ModelName, model: &ModelName, version: VersionId) -> String {
    format!("so1s-{instance}-{model}-{version}")
}

/// The labels of a version's container.
pub fn container_labels(
    instance: &ModelName,
    model: &ModelName,
    version: VersionId,
) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_INSTANCE.to_owned(), instance.to_string()),
        (LABEL_MODEL.to_owned(), model.to_string()),
        (LABEL_VERSION.to_owned(), version.to_string()),
    ])
}

/// The label filter that finds an instance's containers (of one model, if given).
pub fn label_filter(
    instance: &ModelName,
    model: Option<&ModelName>,
) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!("{LABEL_INSTANCE}={instance}")];
    if let Some(model) = model {
        labels.push(format!("{LABEL_MODEL}={model}"));
    }
    HashMap::from([("label".to_owned(), labels)])
}

fn nanos(duration: Duration) -> i64 {
    duration.as_nanos().min(i64::MAX as u128) as i64
}

/// The port inside the container, as Docker names it.
pub fn predict_port_key() -> String {
    format!("{PREDICT_PORT}/tcp")
}

/// The create request of a version's container. Without a network the predict server is
/// published on `host_port` of the host's loopback: a port so1s chose, so that it stays the
/// same when the engine restarts the container (an engine-picked port changes each start).
pub fn container_spec(
    settings: &DockerRolloutConfig,
    target: &Target,
    host_port: u16,
) -> Result<ContainerCreateBody> {
    let Artifact::Image { reference, id, .. } = &target.artifact else {
        return Err(Error::Conflict(format!(
            "the docker backend runs images, not {}",
            target.artifact
        )));
    };
    let mut env = vec![
        format!("SO1S_MODEL_NAME={}", target.model),
        format!("SO1S_MODEL_VERSION={}", target.version),
    ];
    if let Some(threads) = settings.threads {
        env.push(format!("SO1S_THREADS={threads}"));
    }
    env.extend(settings.env.iter().map(|(k, v)| format!("{k}={v}")));
    let mut test = vec!["CMD".to_owned()];
    test.extend(probe_command());
    let port = predict_port_key();
    let (port_bindings, network_mode) = match &settings.network {
        Some(network) => (None, Some(network.clone())),
        None => (
            Some(HashMap::from([(
                port.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(host_port.to_string()),
                }]),
            )])),
            None,
        ),
    };
    Ok(ContainerCreateBody {
        // Run the exact image that was built, even if its tag was moved since.
        image: Some(id.clone().unwrap_or_else(|| reference.clone())),
        env: Some(env),
        labels: Some(container_labels(
            &settings.instance,
            &target.model,
            target.version,
        )),
        exposed_ports: Some(vec![port]),
        healthcheck: Some(HealthConfig {
            test: Some(test),
            interval: Some(nanos(settings.health_interval)),
            timeout: Some(nanos(Duration::from_secs(3))),
            retries: Some(3),
            start_period: Some(nanos(settings.ready_timeout)),
            start_interval: None,
        }),
        stop_timeout: Some(settings.stop_timeout.as_secs() as i64),
        user: Some("65534:65534".into()),
        host_config: Some(HostConfig {
            memory: settings.memory_bytes,
            nano_cpus: settings.cpus.map(|cpus| (cpus * 1e9) as i64),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            port_bindings,
            network_mode,
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([("/tmp".to_owned(), "size=64m".to_owned())])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Where the predict server of a started container answers.
pub fn endpoint(
    settings: &DockerRolloutConfig,
    name: &str,
    inspect: &ContainerInspectResponse,
) -> Result<String> {
    if settings.network.is_some() {
        return Ok(format!("http://{name}:{PREDICT_PORT}"));
    }
    let port = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref())
        .and_then(|ports| ports.get(&predict_port_key()))
        .and_then(|bindings| bindings.as_ref())
        .and_then(|bindings| bindings.iter().find_map(|b| b.host_port.clone()))
        .filter(|port| !port.is_empty())
        .ok_or_else(|| {
            Error::Backend(format!(
                "container {name} has no published port for the predict server"
            ))
        })?;
    Ok(format!("http://127.0.0.1:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::NetworkSettings;

    fn target(artifact: Artifact) -> Target {
        Target {
            model: ModelName::parse("minilm").unwrap(),
            version: VersionId::parse("v2").unwrap(),
            artifact,
        }
    }

    fn image() -> Artifact {
        Artifact::Image {
            reference: "so1s/minilm:v2".into(),
            id: Some("sha256:abc".into()),
            precision: None,
        }
    }

    fn settings() -> DockerRolloutConfig {
        let mut settings = DockerRolloutConfig::new(ModelName::parse("test-1").unwrap());
        settings.cpus = Some(1.5);
        settings.threads = Some(2);
        settings
    }

    #[test]
    fn names_and_labels_identify_instance_model_and_version() {
        let (instance, model) = (
            ModelName::parse("prod").unwrap(),
            ModelName::parse("minilm").unwrap(),
        );
        let v2 = VersionId::parse("v2").unwrap();
        assert_eq!(container_name(&instance, &model, v2), "so1s-prod-minilm-v2");
        let labels = container_labels(&instance, &model, v2);
        assert_eq!(labels["io.so1s.instance"], "prod");
        assert_eq!(labels["io.so1s.model"], "minilm");
        assert_eq!(labels["io.so1s.version"], "v2");
        assert_eq!(
            label_filter(&instance, Some(&model))["label"],
            vec!["io.so1s.instance=prod", "io.so1s.model=minilm"]
        );
    }

    #[test]
    fn the_container_runs_the_built_image_with_limits_and_a_health_check() {
        let spec = container_spec(&settings(), &target(image()), 40123).unwrap();
        assert_eq!(spec.image.as_deref(), Some("sha256:abc"));
        let env = spec.env.unwrap();
        for expected in [
            "SO1S_MODEL_NAME=minilm",
            "SO1S_MODEL_VERSION=v2",
            "SO1S_THREADS=2",
        ] {
            assert!(env.iter().any(|e| e == expected), "{expected} in {env:?}");
        }
        let health = spec.healthcheck.unwrap();
        assert_eq!(
            health.test.unwrap(),
            [
                "CMD",
                "/so1s/bin/so1s-probe",
                "http://127.0.0.1:8080/readyz"
            ]
        );
        assert_eq!(health.interval, Some(5_000_000_000));
        assert_eq!(health.start_period, Some(120_000_000_000));
        let host = spec.host_config.unwrap();
        assert_eq!(host.memory, Some(4 << 30));
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let bindings = host.port_bindings.unwrap()["8080/tcp"].clone().unwrap();
        assert_eq!(bindings[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(bindings[0].host_port.as_deref(), Some("40123"));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop.unwrap(), ["ALL"]);
        assert_eq!(spec.user.as_deref(), Some("65534:65534"));
        assert_eq!(spec.labels.unwrap()["io.so1s.version"], "v2");
    }

    #[test]
    fn without_an_id_the_reference_is_run_and_bundles_are_refused() {
        let by_tag = Artifact::Image {
            reference: "so1s/minilm:v2".into(),
            id: None,
            precision: None,
        };
        let spec = container_spec(&settings(), &target(by_tag), 1).unwrap();
        assert_eq!(spec.image.as_deref(), Some("so1s/minilm:v2"));
        let bundle = Artifact::bundle("/b");
        assert!(container_spec(&settings(), &target(bundle), 1).is_err());
    }

    #[test]
    fn on_a_network_nothing_is_published_and_the_name_is_the_address() {
        let mut settings = settings();
        settings.network = Some("so1s".into());
        let spec = container_spec(&settings, &target(image()), 1).unwrap();
        let host = spec.host_config.unwrap();
        assert!(host.port_bindings.is_none());
        assert_eq!(host.network_mode.as_deref(), Some("so1s"));
        let url = endpoint(
            &settings,
            "so1s-a-b-v1",
            &ContainerInspectResponse::default(),
        );
        assert_eq!(url.unwrap(), "http://so1s-a-b-v1:8080");
    }

    #[test]
    fn the_published_port_is_read_from_the_inspection() {
        let inspect = ContainerInspectResponse {
            network_settings: Some(NetworkSettings {
                ports: Some(HashMap::from([(
                    "8080/tcp".to_owned(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some("49153".into()),
                    }]),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            endpoint(&settings(), "c", &inspect).unwrap(),
            "http://127.0.0.1:49153"
        );
        let error = endpoint(&settings(), "c", &ContainerInspectResponse::default()).unwrap_err();
        assert!(error.to_string().contains("no published port"), "{error}");
    }
}
