//! The objects as JSON values and as the multi-document YAML `so1s manifests` prints. A
//! serialization error is returned as [`Error::Serialize`], naming the object: nothing is
//! printed or applied in its place.

use crate::{Error, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::Value;

/// A Kubernetes object as a JSON value (`apiVersion` and `kind` included).
pub fn to_value<K>(object: &K) -> Result<Value>
where
    K: Serialize + k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let name = object.metadata().name.as_deref().unwrap_or("(unnamed)");
    serialize_json(&format!("the {} {name}", K::KIND), object)
}

/// `object` as a JSON value; an error says it was `what` that could not be serialized.
pub(super) fn serialize_json(what: &str, object: &impl Serialize) -> Result<Value> {
    serde_json::to_value(object).map_err(|e| serialize_error(what, e))
}

/// An [`Error::Serialize`] for `what`.
pub(super) fn serialize_error(
    what: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Serialize {
        what: what.to_owned(),
        source: Box::new(source),
    }
}

/// Objects as one multi-document YAML stream.
pub fn to_yaml(objects: &[Value]) -> Result<String> {
    objects
        .iter()
        .map(|object| {
            let yaml = serde_yaml::to_string(object).map_err(|e| {
                let kind = object["kind"].as_str().unwrap_or("object");
                let name = object["metadata"]["name"].as_str().unwrap_or("(unnamed)");
                serialize_error(&format!("the {kind} {name} as YAML"), e)
            })?;
            Ok(format!("---\n{yaml}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::manifests::model_objects;
    use crate::kubernetes::manifests::test_support::{minilm, v};
    use crate::kubernetes::manifests::ClusterSettings;

    #[test]
    fn yaml_has_one_document_per_object() {
        let objects = model_objects(&ClusterSettings::default(), &minilm(), v(1), "img").unwrap();
        let yaml = to_yaml(&objects).unwrap();
        assert_eq!(yaml.matches("---\n").count(), 4);
        let back: Vec<serde_json::Value> = yaml
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect();
        assert_eq!(back, objects);
        assert_eq!(objects[0]["kind"], "Deployment");
        assert_eq!(objects[0]["apiVersion"], "apps/v1");
    }

    /// A value whose serialization always fails.
    struct Unserializable;

    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no JSON for this"))
        }
    }

    #[test]
    fn a_serialization_error_is_returned_with_what_failed() {
        let error = serialize_json("the Deployment so1s-minilm", &Unserializable).unwrap_err();
        assert!(matches!(error, Error::Serialize { .. }), "{error:?}");
        assert_eq!(error.error_type(), "serialize");
        assert_eq!(
            error.chain(),
            "serializing the Deployment so1s-minilm: no JSON for this"
        );
    }
}
