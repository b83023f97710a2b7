//! The objects as JSON values and as the multi-document YAML `so1s manifests` prints.

pub(super) fn to_value(object: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(object).unwrap_or(serde_json::Value::Null)
}

/// Objects as one multi-document YAML stream.
pub fn to_yaml(objects: &[serde_json::Value]) -> String {
    objects
        .iter()
        .map(|object| {
            let yaml = serde_yaml::to_string(object).unwrap_or_default();
            format!("---\n{yaml}")
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
        let objects = model_objects(&ClusterSettings::default(), &minilm(), v(1), "img");
        let yaml = to_yaml(&objects);
        assert_eq!(yaml.matches("---\n").count(), 3);
        let back: Vec<serde_json::Value> = yaml
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect();
        assert_eq!(back, objects);
    }
}
