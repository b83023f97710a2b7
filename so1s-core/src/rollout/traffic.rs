//! [`Split`]: how a model's requests are shared among its live versions, and the pick of one
//! version per request: by weight, evenly spread, or sticky by a session key.
//!
//! Weights are percentages (they add up to 100), as nginx's `canary-weight` and Istio's route
//! weights are. A request that names no version goes to the version its point falls on: the
//! versions cover `0..100` in order, each as wide as its weight. Points come from a golden-
//! ratio sequence (request `n` gets the fractional part of `n·φ`), which spreads any run of
//! requests over the versions within a request or two of their weights, without a lock; a
//! request with a session key gets the point of the key's hash, so a session stays on one
//! version while the weights stay.

use crate::model::VersionId;
use crate::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// The request header whose value keeps a client on one version of a split.
pub const SESSION_HEADER: &str = "x-so1s-session";

/// The most versions one split may hold.
pub const MAX_ARMS: usize = 4;

/// What the weights of a split add up to.
pub const TOTAL_WEIGHT: u32 = 100;

/// The versions of a model that take its requests, each with its weight (percent).
///
/// Always valid: one to [`MAX_ARMS`] distinct versions whose weights add up to 100, in version
/// order. A split of one version is the ordinary case: it takes everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Split {
    arms: Vec<(VersionId, u32)>,
}

impl Split {
    /// All of a model's requests to `version`.
    pub fn single(version: VersionId) -> Self {
        Self {
            arms: vec![(version, TOTAL_WEIGHT)],
        }
    }

    /// A split of the given versions and weights; a clear error if they do not make one.
    pub fn new(arms: impl IntoIterator<Item = (VersionId, u32)>) -> Result<Self> {
        let mut arms: Vec<(VersionId, u32)> = arms.into_iter().collect();
        arms.sort_by_key(|(version, _)| *version);
        if arms.is_empty() {
            return Err(invalid("name at least one version and its weight"));
        }
        if arms.len() > MAX_ARMS {
            return Err(invalid(format!(
                "{} versions: a split holds at most {MAX_ARMS}",
                arms.len()
            )));
        }
        if let Some(pair) = arms.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(invalid(format!("{} is named twice", pair[0].0)));
        }
        let total: u64 = arms.iter().map(|(_, weight)| u64::from(*weight)).sum();
        if total != u64::from(TOTAL_WEIGHT) {
            return Err(invalid(format!(
                "the weights add up to {total}: they are percentages and must add up to \
                 {TOTAL_WEIGHT}"
            )));
        }
        Ok(Self { arms })
    }

    /// The versions and their weights, in version order.
    pub fn arms(&self) -> &[(VersionId, u32)] {
        &self.arms
    }

    /// The versions, in version order.
    pub fn versions(&self) -> impl Iterator<Item = VersionId> + '_ {
        self.arms.iter().map(|(version, _)| *version)
    }

    /// Whether more than one version takes requests.
    pub fn is_split(&self) -> bool {
        self.arms.len() > 1
    }

    /// `version`'s weight; `None` if it is not in the split.
    pub fn weight(&self, version: VersionId) -> Option<u32> {
        self.arms
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, weight)| *weight)
    }

    /// The version that counts as the model's live one: the heaviest; among equals the one
    /// of `stable` (the versions live before, best first), else the newest.
    pub fn primary(&self, stable: &[VersionId]) -> VersionId {
        let rank = |version: &VersionId| {
            stable
                .iter()
                .position(|s| s == version)
                .map_or(0, |p| stable.len() - p)
        };
        self.arms
            .iter()
            .max_by(|(a, wa), (b, wb)| {
                wa.cmp(wb)
                    .then_with(|| rank(a).cmp(&rank(b)))
                    .then_with(|| a.cmp(b))
            })
            .map(|(version, _)| *version)
            .expect("a split has at least one version")
    }

    /// The split without `version`, its weight shared among the others in proportion to
    /// theirs (evenly if they all have none); `None` if nothing would be left.
    pub fn without(&self, version: VersionId) -> Option<Self> {
        let rest: Vec<(VersionId, u32)> = self
            .arms
            .iter()
            .copied()
            .filter(|(v, _)| *v != version)
            .collect();
        if rest.is_empty() {
            return None;
        }
        let total: u32 = rest.iter().map(|(_, weight)| weight).sum();
        let mut arms: Vec<(VersionId, u32)> = rest
            .iter()
            .map(|(v, weight)| {
                let share = match total {
                    0 => TOTAL_WEIGHT / rest.len() as u32,
                    _ => weight * TOTAL_WEIGHT / total,
                };
                (*v, share)
            })
            .collect();
        // Rounding leaves a few points over: they go to the heaviest.
        let given: u32 = arms.iter().map(|(_, weight)| weight).sum();
        if let Some(heaviest) = arms.iter_mut().max_by_key(|(_, weight)| *weight) {
            heaviest.1 += TOTAL_WEIGHT - given;
        }
        Some(Self { arms })
    }

    /// The version point `point` (`0..100`) falls on. Versions of weight 0 take none.
    pub fn pick(&self, point: u32) -> VersionId {
        let mut end = 0;
        for (version, weight) in &self.arms {
            end += weight;
            if point < end {
                return *version;
            }
        }
        self.primary(&[])
    }

    /// `v1 70%, v2 30%`.
    pub fn describe(&self) -> String {
        self.arms
            .iter()
            .map(|(version, weight)| format!("{version} {weight}%"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The point of the `n`-th request: the fractional part of `n·φ`, scaled to `0..100`.
pub fn point_of_request(n: u64) -> u32 {
    // 2^64 / φ: the golden ratio's fractional part as a 64-bit fixed-point number.
    let fraction = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((u128::from(fraction) * u128::from(TOTAL_WEIGHT)) >> 64) as u32
}

/// The point of a session key: its FNV-1a hash, mixed (MurmurHash3's finalizer: FNV's high
/// bits barely change between keys that differ in their last bytes), scaled to `0..100`.
pub fn point_of_session(key: &[u8]) -> u32 {
    let mut hash = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    ((u128::from(hash) * u128::from(TOTAL_WEIGHT)) >> 64) as u32
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidInput(format!("traffic split: {}", message.into()))
}

/// As JSON a split is a map from version to weight: `{"v1": 70, "v2": 30}`.
impl Serialize for Split {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let map: BTreeMap<String, u32> = self
            .arms
            .iter()
            .map(|(version, weight)| (version.to_string(), *weight))
            .collect();
        map.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Split {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let map = BTreeMap::<String, u32>::deserialize(deserializer)?;
        let arms = map
            .into_iter()
            .map(|(version, weight)| Ok((VersionId::parse(&version)?, weight)))
            .collect::<Result<Vec<_>>>()
            .map_err(serde::de::Error::custom)?;
        Split::new(arms).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u32) -> VersionId {
        VersionId::parse(&n.to_string()).unwrap()
    }

    fn split(arms: &[(u32, u32)]) -> Split {
        Split::new(arms.iter().map(|(n, weight)| (v(*n), *weight))).unwrap()
    }

    #[test]
    fn a_split_is_versions_with_percentages_that_add_up() {
        let s: Split = serde_json::from_str(r#"{"v2": 30, "1": 70}"#).unwrap();
        assert_eq!(s.arms(), &[(v(1), 70), (v(2), 30)]);
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"v1":70,"v2":30}"#);
        assert_eq!(s.describe(), "v1 70%, v2 30%");
        assert!(s.is_split() && !Split::single(v(1)).is_split());
        for (json, says) in [
            (r#"{}"#, "at least one version"),
            (r#"{"v1": 70, "v2": 40}"#, "add up to 110"),
            (r#"{"v1": 70}"#, "add up to 70"),
            (r#"{"latest": 100}"#, "invalid version"),
            (r#"{"v1": -5, "v2": 105}"#, "invalid value"),
            (
                r#"{"v1": 20, "v2": 20, "v3": 20, "v4": 20, "v5": 20}"#,
                "at most 4",
            ),
        ] {
            let err = serde_json::from_str::<Split>(json).unwrap_err().to_string();
            assert!(err.contains(says), "{json}: {err}");
        }
        let err = Split::new([(v(1), 50), (v(1), 50)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("v1 is named twice"), "{err}");
    }

    #[test]
    fn requests_spread_over_the_versions_by_their_weights() {
        let s = split(&[(1, 70), (2, 30)]);
        for n in [10_u64, 100, 400, 1000] {
            let to_v1 = (0..n)
                .filter(|i| s.pick(point_of_request(*i)) == v(1))
                .count();
            let share = to_v1 as f64 / n as f64;
            assert!((share - 0.7).abs() <= 1.5 / n as f64 + 0.01, "{n}: {share}");
        }
        // Weight 0 takes no unnamed request; the points cover 0..100.
        let s = split(&[(1, 0), (2, 100)]);
        assert!((0..1000).all(|i| s.pick(point_of_request(i)) == v(2)));
        assert!((0..1000).all(|i| point_of_request(i) < 100));
    }

    #[test]
    fn a_session_stays_on_one_version_and_sessions_spread_by_weight() {
        let s = split(&[(1, 70), (2, 30)]);
        let version = s.pick(point_of_session(b"user-42"));
        assert!((0..20).all(|_| s.pick(point_of_session(b"user-42")) == version));
        let to_v1 = (0..2000)
            .filter(|i| s.pick(point_of_session(format!("user-{i}").as_bytes())) == v(1))
            .count();
        assert!(
            (1300..1500).contains(&to_v1),
            "{to_v1} of 2000 sessions on v1"
        );
    }

    #[test]
    fn the_primary_is_the_heaviest_and_among_equals_the_stable_one() {
        assert_eq!(split(&[(1, 30), (2, 70)]).primary(&[v(1)]), v(2));
        assert_eq!(split(&[(1, 50), (2, 50)]).primary(&[v(1)]), v(1));
        assert_eq!(split(&[(1, 50), (2, 50)]).primary(&[]), v(2));
        assert_eq!(split(&[(1, 50), (2, 50)]).primary(&[v(2), v(1)]), v(2));
    }

    #[test]
    fn a_version_taken_out_leaves_its_weight_to_the_others() {
        let s = split(&[(1, 60), (2, 30), (3, 10)]);
        assert_eq!(s.without(v(3)).unwrap().arms(), &[(v(1), 67), (v(2), 33)]);
        assert_eq!(s.without(v(1)).unwrap().arms(), &[(v(2), 75), (v(3), 25)]);
        let s = split(&[(1, 100), (2, 0), (3, 0)]);
        assert_eq!(s.without(v(1)).unwrap().arms(), &[(v(2), 50), (v(3), 50)]);
        assert_eq!(Split::single(v(1)).without(v(1)), None);
    }
}
