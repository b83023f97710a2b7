//! What the api server may do and who may reach it: its Role (only the kinds so1s touches,
//! in its own namespace, no wildcards), the RoleBinding to its ServiceAccount, and the
//! NetworkPolicy that lets in only the namespaces named.

use super::common::API_SERVER;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;

/// The api server's Role: it writes the Jobs, Deployments, Services and Ingresses it creates,
/// and reads pods and their logs.
pub(super) fn api_role(metadata: ObjectMeta) -> Role {
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|s| (*s).to_owned()).collect()),
        resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    const WRITE: &[&str] = &[
        "get", "list", "watch", "create", "patch", "update", "delete",
    ];
    Role {
        metadata,
        rules: Some(vec![
            rule(&["batch"], &["jobs"], WRITE),
            rule(&["apps"], &["deployments"], WRITE),
            rule(&[""], &["services"], WRITE),
            rule(&["networking.k8s.io"], &["ingresses"], WRITE),
            rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
            rule(&[""], &["pods"], &["get", "list", "watch"]),
            rule(&[""], &["pods/log"], &["get"]),
        ]),
    }
}

/// The api server's Role granted to its ServiceAccount in `namespace`.
pub(super) fn api_role_binding(metadata: ObjectMeta, namespace: &str) -> RoleBinding {
    RoleBinding {
        metadata,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: API_SERVER.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: API_SERVER.into(),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        }]),
    }
}

/// Lets only the pods of the `namespaces` reach the pods `selector` picks.
pub(super) fn api_network_policy(
    metadata: ObjectMeta,
    selector: BTreeMap<String, String>,
    namespaces: &[&str],
) -> NetworkPolicy {
    NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(namespaces.iter().map(|name| namespace_peer(name)).collect()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// Every pod of the namespace `name` (by the label Kubernetes sets on each namespace).
fn namespace_peer(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                name.to_owned(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::manifests::common::APP_INSTANCE;
    use crate::kubernetes::manifests::{install, ClusterSettings, InstallSettings};

    #[test]
    fn the_install_role_names_only_what_so1s_touches() {
        let objects = install(
            &ClusterSettings::default(),
            &InstallSettings::new("so1s/so1s:1"),
        );
        let rules = objects.role.rules.clone().unwrap();
        let mut granted: Vec<String> = rules
            .iter()
            .flat_map(|r| {
                let groups = r.api_groups.clone().unwrap();
                r.resources
                    .clone()
                    .unwrap()
                    .into_iter()
                    .map(move |res| format!("{}/{res}", groups[0]))
            })
            .collect();
        granted.sort();
        assert_eq!(
            granted,
            [
                "/pods",
                "/pods/log",
                "/services",
                "apps/deployments",
                "autoscaling/horizontalpodautoscalers",
                "batch/jobs",
                "networking.k8s.io/ingresses"
            ]
        );
        for rule in &rules {
            let all: Vec<&String> = rule
                .verbs
                .iter()
                .chain(rule.resources.iter().flatten())
                .chain(rule.api_groups.iter().flatten())
                .collect();
            assert!(all.iter().all(|s| !s.contains('*')), "{rule:?}");
        }
        let logs = rules
            .iter()
            .find(|r| r.resources.as_ref().unwrap()[0] == "pods/log")
            .unwrap();
        assert_eq!(logs.verbs, ["get"]);
        assert_eq!(
            objects.role_binding.subjects.clone().unwrap()[0].name,
            API_SERVER
        );
        assert_eq!(objects.role_binding.role_ref.name, API_SERVER);
    }

    #[test]
    fn only_the_ingress_controller_and_so1s_reach_the_api_server() {
        let settings = ClusterSettings::default();
        let objects = install(&settings, &InstallSettings::new("so1s/so1s:1"));
        let policy = objects.network_policy.spec.unwrap();
        assert_eq!(policy.policy_types.unwrap(), ["Ingress"]);
        let peers: Vec<String> = policy.ingress.unwrap()[0]
            .from
            .clone()
            .unwrap()
            .iter()
            .map(|p| {
                p.namespace_selector.clone().unwrap().match_labels.unwrap()
                    ["kubernetes.io/metadata.name"]
                    .clone()
            })
            .collect();
        assert_eq!(peers, ["ingress-nginx", settings.namespace.as_str()]);
        let selector = policy.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(selector[APP_INSTANCE], API_SERVER);
    }
}
