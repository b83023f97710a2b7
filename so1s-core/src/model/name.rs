//! Validated names: [`ModelName`] and [`VersionId`].

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A model's name: 1–63 characters of lower-case letters, digits and `-`, starting with a
/// letter and ending with a letter or digit. The same rule as a Kubernetes DNS-1123 label,
/// so a name is usable as a directory, an image name and a Kubernetes object name as is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName(String);

impl ModelName {
    /// Checks a name.
    pub fn parse(name: &str) -> Result<Self> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(Error::InvalidInput(format!(
                "invalid model name `{name}`: use 1-63 lower-case letters, digits and '-', \
                 starting with a letter and ending with a letter or digit"
            )))
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ModelName {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::parse(&value)
    }
}

impl From<ModelName> for String {
    fn from(name: ModelName) -> Self {
        name.0
    }
}

/// A version of a model: `v1`, `v2`, ... in upload order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VersionId(u32);

impl VersionId {
    /// The first version of a model.
    pub const FIRST: VersionId = VersionId(1);

    /// Parses `v7` (or `7`).
    pub fn parse(text: &str) -> Result<Self> {
        text.strip_prefix('v')
            .unwrap_or(text)
            .parse::<u32>()
            .ok()
            .filter(|&n| n > 0)
            .map(VersionId)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "invalid version `{text}`: versions are v1, v2, ..."
                ))
            })
    }

    /// The version's number.
    pub fn number(self) -> u32 {
        self.0
    }

    /// The version after this one.
    pub fn next(self) -> Self {
        VersionId(self.0 + 1)
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl TryFrom<String> for VersionId {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        Self::parse(&value)
    }
}

impl From<VersionId> for String {
    fn from(version: VersionId) -> Self {
        version.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_follow_dns_label_rules() {
        for good in ["minilm", "a", "sentiment-v2", "m0del"] {
            assert_eq!(ModelName::parse(good).unwrap().as_str(), good);
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "MiniLM",
            "-x",
            "x-",
            "9lives",
            "a_b",
            "a/b",
            "..",
            long.as_str(),
        ] {
            assert!(ModelName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn versions_parse_print_and_order() {
        assert_eq!(VersionId::parse("v12").unwrap().to_string(), "v12");
        assert_eq!(VersionId::parse("3").unwrap(), VersionId(3));
        assert!(VersionId::parse("v0").is_err());
        assert!(VersionId::parse("latest").is_err());
        assert!(VersionId(2) < VersionId(10));
        assert_eq!(VersionId::FIRST.next().to_string(), "v2");
        let json = serde_json::to_string(&VersionId(4)).unwrap();
        assert_eq!(json, "\"v4\"");
        assert!(serde_json::from_str::<ModelName>("\"Bad Name\"").is_err());
    }
}
