//! The smoke test of a build, run in this process: load the model with the forward pass it
//! will be served with and run one prediction. so1s-core runs no model itself; this is the
//! [`SmokeRunner`] that binaries with inference hand to its builders
//! ([`SmokeTest::InProcess`](so1s_core::build::SmokeTest::InProcess)).

use crate::{ServiceOptions, TransformerService};
use async_trait::async_trait;
use so1s_core::build::smoke::{SmokeReport, SmokeRunner, SMOKE_TEXT};
use so1s_core::model::ModelLayout;
use so1s_core::{Error, Prediction, Result};

/// Loads the model in this process and runs one prediction.
#[derive(Debug, Clone, Copy, Default)]
pub struct InProcessSmokeTest;

#[async_trait]
impl SmokeRunner for InProcessSmokeTest {
    async fn run(&self, layout: ModelLayout) -> Result<SmokeReport> {
        smoke_test(layout).await
    }
}

/// Loads the model of `layout` here and runs one prediction, with the forward pass it will
/// be served with (its so1s.toml may choose the forward pass and precision): one the model
/// cannot run fails here, before any rollout. Reports what the model answered, in words,
/// and what `auto` precision measured against f32 and chose.
pub async fn smoke_test(layout: ModelLayout) -> Result<SmokeReport> {
    let options = ServiceOptions {
        max_batch_size: 1,
        queue_capacity: 1,
        threads: Some(1),
        precision: layout.manifest.serving.precision.unwrap_or_default(),
        forward_pass: layout.manifest.serving.forward_pass.unwrap_or_default(),
        ..ServiceOptions::default()
    };
    let service = TransformerService::load(layout, options).await?;
    let answer = match service.predict_one(SMOKE_TEXT).await? {
        Prediction::Embedding(vector) => {
            if vector.iter().any(|x| !x.is_finite()) {
                return Err(Error::InvalidModel(
                    "the smoke prediction contains NaN or infinite values".into(),
                ));
            }
            format!("a {}-value embedding", vector.len())
        }
        Prediction::Label { label, score, .. } => format!("label `{label}` ({score:.3})"),
        Prediction::Entities(entities) => format!("{} entities", entities.len()),
        Prediction::Relevance { score, .. } => format!("relevance {score:.3}"),
    };
    // What `auto` precision measured goes into the version's record and its bundle.
    Ok(SmokeReport {
        answer,
        precision: service.info().accuracy.clone(),
    })
}
