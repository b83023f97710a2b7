//! The accuracy contract of `auto` precision as plain data: what a faster precision was
//! measured to do against f32 ([`Drift`]) and what was chosen ([`Accuracy`]). The build
//! measures it (so1s-inference's `accuracy::compare`, in the smoke test), the version
//! record and the bundle keep it ([`BuildRecord`]), and every predict server of the version
//! serves the precision chosen without measuring again.

use super::Precision;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The least cosine an embedding may keep.
pub const COSINE_TOLERANCE: f64 = 0.9999;
/// The most a score (a label's, an entity's, a relevance) may move.
pub const SCORE_TOLERANCE: f64 = 0.005;

/// What a [`Drift`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// The least cosine between an embedding and f32's (embeddings).
    LeastCosine,
    /// The largest change of a score (labels, entities, relevance).
    LargestScoreChange,
}

impl Measure {
    /// The measure in words.
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::LeastCosine => "least cosine",
            Measure::LargestScoreChange => "largest score change",
        }
    }
}

/// How far a precision's answers moved from f32's on the calibration texts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// What was measured.
    pub measure: Measure,
    /// Its value.
    pub value: f64,
    /// What the contract allows: the least cosine, or the largest change.
    pub tolerance: f64,
    /// Whether every text kept its label, its entities or its rank.
    pub same_answers: bool,
    /// How many texts (or pairs) it was measured on.
    pub texts: usize,
}

impl Drift {
    /// Whether the contract holds.
    pub fn within(&self) -> bool {
        let close = match self.measure {
            Measure::LeastCosine => self.value >= self.tolerance,
            Measure::LargestScoreChange => self.value <= self.tolerance,
        };
        close && self.same_answers
    }
}

/// What `auto` chose and why: the precision it measured, the drift, the precision it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// The faster precision measured (`bf16`).
    pub measured: Precision,
    /// Its drift from f32.
    pub drift: Drift,
    /// The precision taken: the measured one if within the contract, else f32.
    pub chosen: Precision,
}

impl Accuracy {
    /// The choice `drift` implies for `measured`.
    pub fn of(measured: Precision, drift: Drift) -> Self {
        let chosen = match drift.within() {
            true => measured,
            false => Precision::F32,
        };
        Self {
            measured,
            drift,
            chosen,
        }
    }
}

impl std::fmt::Display for Accuracy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.drift;
        let verdict = match d.within() {
            true => "within the contract",
            false if !d.same_answers => "answers changed",
            false => "outside the contract",
        };
        write!(
            f,
            "{} against f32 on {} calibration texts: {} {:.5} (tolerance {}), {verdict}: {}",
            self.measured.as_str(),
            d.texts,
            d.measure.as_str(),
            d.value,
            d.tolerance,
            self.chosen.as_str()
        )
    }
}

/// What a build found out about a version that its servers need not find out again, kept
/// in the bundle as [`BuildRecord::FILE`] (and so in its image).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// What `auto` precision measured and chose, when the build measured it (on a CPU
    /// with native bf16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Accuracy>,
}

impl BuildRecord {
    /// Its file in a built model directory. An uploaded file of that name is removed before
    /// the build's smoke test: only the build writes it.
    pub const FILE: &'static str = "so1s-build.json";

    /// The record in model directory `dir`, if the build wrote one.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::InvalidModel(format!("{} is not a build record: {e}", Self::FILE))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                context: format!("reading {}", path.display()),
                source,
            }),
        }
    }

    /// Writes the record into model directory `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(Self::FILE);
        let json = serde_json::to_vec_pretty(self).expect("a build record serializes");
        std::fs::write(&path, json).map_err(|source| Error::Io {
            context: format!("writing {}", path.display()),
            source,
        })
    }

    /// Removes a record from model directory `dir` (one that came with an upload).
    pub fn remove(dir: &Path) -> Result<bool> {
        let path = dir.join(Self::FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(Error::Io {
                context: format!("removing {}", path.display()),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drift(measure: Measure, value: f64, same_answers: bool) -> Drift {
        Drift {
            measure,
            value,
            tolerance: match measure {
                Measure::LeastCosine => COSINE_TOLERANCE,
                Measure::LargestScoreChange => SCORE_TOLERANCE,
            },
            same_answers,
            texts: 12,
        }
    }

    #[test]
    fn bf16_is_chosen_only_within_the_contract() {
        let kept = Accuracy::of(Precision::Bf16, drift(Measure::LeastCosine, 0.99995, true));
        assert_eq!(kept.chosen, Precision::Bf16);
        let moved = Accuracy::of(
            Precision::Bf16,
            drift(Measure::LargestScoreChange, 0.024, true),
        );
        assert_eq!(moved.chosen, Precision::F32);
        assert!(
            moved.to_string().contains("outside the contract: f32"),
            "{moved}"
        );
        let flipped = Accuracy::of(
            Precision::Bf16,
            drift(Measure::LargestScoreChange, 0.001, false),
        );
        assert_eq!(flipped.chosen, Precision::F32);
        assert!(flipped.to_string().contains("answers changed"), "{flipped}");
    }

    #[test]
    fn a_build_record_reads_back_as_written() {
        let record = BuildRecord {
            precision: Some(Accuracy::of(
                Precision::Bf16,
                drift(Measure::LeastCosine, 0.99998, true),
            )),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"measure\":\"least_cosine\""), "{json}");
        assert!(json.contains("\"chosen\":\"bf16\""), "{json}");
        assert_eq!(serde_json::from_str::<BuildRecord>(&json).unwrap(), record);
        assert_eq!(
            serde_json::from_str::<BuildRecord>("{}").unwrap(),
            BuildRecord::default()
        );

        let dir = tempfile::tempdir().unwrap();
        assert_eq!(BuildRecord::read(dir.path()).unwrap(), None);
        record.write(dir.path()).unwrap();
        assert_eq!(BuildRecord::read(dir.path()).unwrap(), Some(record));
        assert!(BuildRecord::remove(dir.path()).unwrap());
        assert!(!BuildRecord::remove(dir.path()).unwrap());
        std::fs::write(dir.path().join(BuildRecord::FILE), "not json").unwrap();
        let error = BuildRecord::read(dir.path()).unwrap_err().to_string();
        assert!(error.contains("not a build record"), "{error}");
    }
}
