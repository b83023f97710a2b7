//! The api server's answers as types: what `so1s serve` writes and [`ApiClient`] reads, so
//! the two cannot drift apart. Plain serde data, no HTTP.
//!
//! [`ApiClient`]: crate::client::ApiClient

use crate::auth::TokenInfo;
use crate::model::{ModelName, VersionId};
use crate::registry::{VersionRecord, VersionState};
use crate::rollout::{Health, Split};
use serde::{Deserialize, Serialize};

/// A version's record with the links to it and its events (`GET .../versions/{v}`, the
/// `202` of an upload, the answer of a rollback or promote).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionView {
    /// The record.
    #[serde(flatten)]
    pub record: VersionRecord,
    /// Where it and its events are.
    pub links: VersionLinks,
}

impl VersionView {
    /// The record with its links.
    pub fn new(record: VersionRecord) -> Self {
        let base = format!(
            "/v1/models/{}/versions/{}",
            record.stored.model, record.stored.version
        );
        Self {
            links: VersionLinks {
                events: format!("{base}/events"),
                this: base,
            },
            record,
        }
    }

    /// The model it is a version of.
    pub fn model(&self) -> &ModelName {
        &self.record.stored.model
    }

    /// The version.
    pub fn version(&self) -> VersionId {
        self.record.stored.version
    }

    /// Its state.
    pub fn state(&self) -> VersionState {
        self.record.state
    }
}

/// The paths of a version and of its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionLinks {
    /// `/v1/models/{name}/versions/{version}`.
    #[serde(rename = "self")]
    pub this: String,
    /// Its server-sent events.
    pub events: String,
}

/// One model with all its versions (`GET /v1/models/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelView {
    /// The model's name.
    pub name: ModelName,
    /// The version serving, if any.
    pub live_version: Option<VersionId>,
    /// The live version's health as its backend sees it.
    pub health: Option<Health>,
    /// Whether the seed's `/inference/predict` serves this model.
    pub default: bool,
    /// While its requests are split between versions: each one's weight (percent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Split>,
    /// The gateway path of its predictions.
    pub predict: String,
    /// Every version, oldest first.
    pub versions: Vec<VersionView>,
    /// Its idle policy and whether its instances run.
    #[serde(default)]
    pub scale: ScaleView,
}

/// What `GET /v1/models/{name}` says of a model's scaling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleView {
    /// Seconds without a request after which its instances stop; 0: always on.
    pub idle_after_s: u64,
    /// Whether its instances run (`false` while scaled to zero, or with no live version).
    pub running: bool,
    /// How often it was woken.
    pub wakeups: u64,
    /// Whether it is waking now (requests are held for it).
    #[serde(default)]
    pub waking: bool,
    /// When its last request was routed (ms since the Unix epoch), while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_at: Option<u64>,
}

/// What `PATCH /v1/models/{name}` changes: the idle policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPatch {
    /// Seconds without a request after which the model's instances stop; 0: always on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_after_s: Option<u64>,
}

/// A line of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The model's name.
    pub name: ModelName,
    /// The version serving, if any.
    pub live_version: Option<VersionId>,
    /// How many versions it has.
    pub versions: usize,
    /// Its newest version and that version's state.
    pub latest: Option<LatestVersion>,
}

/// A model's newest version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestVersion {
    /// The version.
    pub version: VersionId,
    /// Its state.
    pub state: VersionState,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// Every model, by name.
    pub models: Vec<ModelSummary>,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenList {
    /// The tokens that are not revoked.
    pub tokens: Vec<TokenInfo>,
}

/// `201` of `POST /v1/tokens`: the new token, shown this once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    /// What is stored of it.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The token itself.
    pub token: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("info", &self.info)
            .field("token", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ArchiveFormat, StoredVersion};

    fn record() -> VersionRecord {
        let stored = StoredVersion {
            model: ModelName::parse("minilm").unwrap(),
            version: VersionId::parse("v2").unwrap(),
            sha256: "ab".repeat(32),
            size: 42,
            format: ArchiveFormat::TarGz,
            stored_at: 7,
        };
        VersionRecord {
            stored,
            state: VersionState::Live,
            error: None,
            artifact: None,
            updated_at_ms: 9,
            live_since_ms: Some(9),
            restarts: 0,
            last_exit: None,
            weight: Some(100),
        }
    }

    #[test]
    fn a_version_view_is_its_record_with_links_and_reads_back() {
        let view = VersionView::new(record());
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["version"], "v2");
        assert_eq!(json["state"], "live");
        assert_eq!(json["links"]["self"], "/v1/models/minilm/versions/v2");
        assert_eq!(
            json["links"]["events"],
            "/v1/models/minilm/versions/v2/events"
        );
        let back: VersionView = serde_json::from_value(json).unwrap();
        assert_eq!(back, view);
    }

    #[test]
    fn a_created_token_stays_out_of_debug_output() {
        let created = CreatedToken {
            info: TokenInfo {
                name: "ci".into(),
                role: crate::auth::Role::Deployer,
                created_at_ms: 1,
                last_used_at_ms: None,
                revoked_at_ms: None,
            },
            token: "so1s_secret".into(),
        };
        assert!(!format!("{created:?}").contains("secret"));
    }
}
