//! The checks every rollout makes before a version gets traffic: `/readyz` answers, then one
//! smoke prediction succeeds.

use crate::events::Events;
use crate::{Error, Result};
use std::time::Duration;

/// The text of the smoke prediction.
pub const SMOKE_TEXT: &str = "so1s rollout check";

/// Whether the predict server at `url` says it is ready.
pub async fn is_ready(client: &reqwest::Client, url: &str) -> bool {
    client
        .get(format!("{url}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}

/// Sends one prediction to the predict server at `url`; fails with what it answered.
pub async fn smoke_test(client: &reqwest::Client, url: &str, events: &Events) -> Result<()> {
    let smoke = client
        .post(format!("{url}/predict"))
        .json(&serde_json::json!({ "text": SMOKE_TEXT }))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| Error::Load(format!("the smoke prediction failed: {e}")))?;
    if !smoke.status().is_success() {
        let status = smoke.status();
        let body = smoke.text().await.unwrap_or_default();
        return Err(Error::Load(format!(
            "the smoke prediction answered {status}: {body}"
        )));
    }
    events.progress("ready: the smoke prediction answered");
    Ok(())
}
