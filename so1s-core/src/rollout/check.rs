//! The checks every rollout makes before a version gets traffic: `/readyz` answers, then one
//! smoke prediction succeeds.

use crate::events::Events;
use crate::{Error, Result};
use std::time::Duration;

/// The text of the smoke prediction.
pub const SMOKE_TEXT: &str = "so1s rollout check";

/// Whether the predict server at `url` says it is ready (within 2 s).
pub async fn is_ready(client: &reqwest::Client, url: &str) -> bool {
    ready_within(client, url, Duration::from_secs(2)).await
}

/// Whether the predict server at `url` says it is ready within `timeout`.
pub async fn ready_within(client: &reqwest::Client, url: &str, timeout: Duration) -> bool {
    client
        .get(format!("{url}/readyz"))
        .timeout(timeout)
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}

/// A check under way, kept across a supervision loop's turns so that exits and the
/// gateway's verdicts are heard while it waits for answers.
pub type Pending<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Why an instance the gateway condemned was started again.
pub(crate) const CONDEMNED: &str =
    "stopped answering requests: timeouts or server errors in a row at the gateway";

/// How long a condemned instance has to answer `/readyz` to be found slow, not frozen: its
/// requests wait meanwhile. (`/readyz` is answered beside the model, at once even while it
/// works through a queue.)
pub const CONDEMNED_CHECK: Duration = Duration::from_secs(1);

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
