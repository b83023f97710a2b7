//! [`ApiClient`]: a typed client of the api server (`so1s serve`), used by the `so1s` CLI
//! and by programs that deploy models.
//!
//! Answers are the types of [`crate::resources`], the ones the server writes; a version's
//! events are a [`Stream`]. Every call carries the bearer token it was given. An error answer becomes
//! [`ClientError::Remote`] with the server's status, `error_type` and message; a server
//! that cannot be reached becomes [`ClientError::Unreachable`] (both as [`Error::Client`]).

use crate::auth::{Identity, Role, Token, TokenInfo};
use crate::events::Event;
use crate::model::VersionId;
use crate::resources::{
    CreatedToken, ModelList, ModelPatch, ModelView, ScaleView, TokenList, VersionView,
};
use crate::rollout::Split;
use crate::{ClientError, Error, Prediction, Result};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// How long an idle connection is kept for the next call: well under the server's
/// `header_read_timeout` (10 s by default, counted from the end of the last answer), so a
/// call never goes out on a connection the server is closing at that moment (an upload sent
/// into it failed with "error sending request").
const POOL_IDLE: std::time::Duration = std::time::Duration::from_secs(4);

/// A client of one api server.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<Token>,
    http: reqwest::Client,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ApiClient {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8000`).
    pub fn new(base: impl Into<String>, token: Option<Token>) -> Self {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(POOL_IDLE)
            .build()
            .unwrap_or_default();
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            token,
            http,
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        }
    }

    /// Sends a request; the success answer's body as `T`, or the error.
    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let body = answer(request.send().await.map_err(transport)?).await?;
        serde_json::from_value(body).map_err(|e| {
            remote(
                200,
                "unexpected_answer",
                format!("the server's answer is not what this client understands: {e}"),
            )
        })
    }

    /// Sends a request whose success answer has no body worth reading.
    async fn send_empty(&self, request: reqwest::RequestBuilder) -> Result<()> {
        answer(request.send().await.map_err(transport)?)
            .await
            .map(|_| ())
    }

    /// Uploads an archive (`.tar.gz` or `.zip` bytes) as a new version of `model`; returns
    /// the stored version (state `stored`) with the links to it and its events.
    pub async fn upload(&self, model: &str, archive: Vec<u8>) -> Result<VersionView> {
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/models/{model}/versions"),
            )
            .header("content-type", "application/octet-stream")
            .body(archive);
        self.send(request).await
    }

    /// Every model with its live version and newest version.
    pub async fn models(&self) -> Result<ModelList> {
        self.send(self.request(reqwest::Method::GET, "/v1/models"))
            .await
    }

    /// One model, its health and all its versions.
    pub async fn model(&self, model: &str) -> Result<ModelView> {
        let path = format!("/v1/models/{model}");
        self.send(self.request(reqwest::Method::GET, &path)).await
    }

    /// One version's record.
    pub async fn version(&self, model: &str, version: &str) -> Result<VersionView> {
        let path = format!("/v1/models/{model}/versions/{version}");
        self.send(self.request(reqwest::Method::GET, &path)).await
    }

    /// A version's events as a stream: its history first, then each new event until the
    /// version settles (live, failed or retired) and the server ends the stream.
    pub async fn events(
        &self,
        model: &str,
        version: &str,
    ) -> Result<impl Stream<Item = Result<Event>> + Send + Unpin + 'static> {
        let path = format!("/v1/models/{model}/versions/{version}/events");
        let response = self
            .request(reqwest::Method::GET, &path)
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(transport)?;
        if !response.status().is_success() {
            return Err(answer(response)
                .await
                .err()
                .unwrap_or_else(|| remote(0, "transport", "the event stream did not open")));
        }
        let events = response.bytes_stream().eventsource().filter_map(|message| {
            std::future::ready(match message {
                // Keep-alive comments carry no data; anything else is one event.
                Ok(message) if message.data.is_empty() => None,
                Ok(message) => Some(serde_json::from_str::<Event>(&message.data).map_err(|e| {
                    remote(
                        200,
                        "unexpected_answer",
                        format!("an event this client cannot read: {e}"),
                    )
                })),
                Err(e) => Some(Err(remote(
                    0,
                    "transport",
                    format!("the event stream broke off: {e}"),
                ))),
            })
        });
        Ok(Box::pin(events))
    }

    /// Follows a version's events until it settles, calling `on_event` for each, history
    /// first; then returns the version's record.
    pub async fn follow(
        &self,
        model: &str,
        version: &str,
        mut on_event: impl FnMut(&Event),
    ) -> Result<VersionView> {
        let mut events = self.events(model, version).await?;
        while let Some(event) = events.next().await {
            on_event(&event?);
        }
        self.version(model, version).await
    }

    /// Rolls `model` back to the version that served before; returns the new live version.
    pub async fn rollback(&self, model: &str) -> Result<VersionView> {
        let path = format!("/v1/models/{model}/rollback");
        self.send(self.request(reqwest::Method::POST, &path)).await
    }

    /// Rolls out a `built` or `retired` version of `model`, whatever is live; returns it,
    /// live.
    pub async fn promote(&self, model: &str, version: &str) -> Result<VersionView> {
        let path = format!("/v1/models/{model}/versions/{version}/promote");
        self.send(self.request(reqwest::Method::POST, &path)).await
    }

    /// Each live version of `model` with its weight (percent of requests); empty when none is
    /// live.
    pub async fn traffic(&self, model: &str) -> Result<BTreeMap<VersionId, u32>> {
        let path = format!("/v1/models/{model}/traffic");
        self.send(self.request(reqwest::Method::GET, &path)).await
    }

    /// Splits `model`'s requests between built versions by weight (a split of one version
    /// promotes it); returns the split now in effect.
    pub async fn set_traffic(
        &self,
        model: &str,
        split: &Split,
    ) -> Result<BTreeMap<VersionId, u32>> {
        let path = format!("/v1/models/{model}/traffic");
        self.send(self.request(reqwest::Method::PUT, &path).json(split))
            .await
    }

    /// Sets `model`'s idle policy: after `idle_after_s` seconds without a request its
    /// instances stop until the next one (0: always on); returns its scale.
    pub async fn set_idle_after(&self, model: &str, idle_after_s: u64) -> Result<ScaleView> {
        let path = format!("/v1/models/{model}");
        let patch = ModelPatch {
            idle_after_s: Some(idle_after_s),
        };
        self.send(self.request(reqwest::Method::PATCH, &path).json(&patch))
            .await
    }

    /// Deletes a version that is not serving.
    pub async fn delete(&self, model: &str, version: &str) -> Result<()> {
        let path = format!("/v1/models/{model}/versions/{version}");
        self.send_empty(self.request(reqwest::Method::DELETE, &path))
            .await
    }

    /// A prediction through the gateway.
    pub async fn predict(&self, model: &str, text: &str) -> Result<Prediction> {
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/inference/{model}/predict"),
            )
            .json(&json!({ "text": text }));
        self.send(request).await
    }

    /// Who this client's token is.
    pub async fn whoami(&self) -> Result<Identity> {
        self.send(self.request(reqwest::Method::GET, "/v1/whoami"))
            .await
    }

    /// Makes a token (admin); the answer holds it, the only time it is shown.
    pub async fn create_token(&self, name: &str, role: Role) -> Result<CreatedToken> {
        let request = self
            .request(reqwest::Method::POST, "/v1/tokens")
            .json(&json!({ "name": name, "role": role }));
        self.send(request).await
    }

    /// The tokens that are not revoked (admin).
    pub async fn tokens(&self) -> Result<TokenList> {
        self.send(self.request(reqwest::Method::GET, "/v1/tokens"))
            .await
    }

    /// Revokes a token by name (admin); returns what is stored of it, now revoked.
    pub async fn revoke_token(&self, name: &str) -> Result<TokenInfo> {
        let path = format!("/v1/tokens/{name}");
        self.send(self.request(reqwest::Method::DELETE, &path))
            .await
    }
}

/// A response's JSON body (null when empty) on success, else the server's error.
async fn answer(response: reqwest::Response) -> Result<Value> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(transport)?;
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
    };
    if status.is_success() {
        return Ok(body);
    }
    Err(remote(
        status.as_u16(),
        body["error_type"].as_str().unwrap_or("unknown"),
        body["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string()),
    ))
}

/// An error answer of the server (`status` 0: the answer broke off).
fn remote(status: u16, error_type: &str, message: impl Into<String>) -> Error {
    ClientError::Remote {
        status,
        error_type: error_type.to_owned(),
        message: message.into(),
    }
    .into()
}

fn transport(error: reqwest::Error) -> Error {
    if error.is_connect() {
        ClientError::Unreachable(error.to_string()).into()
    } else {
        remote(0, "transport", error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let client = ApiClient::new("http://h:1/", Some(Token::new("so1s_secret")));
        let debug = format!("{client:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert_eq!(client.base(), "http://h:1");
    }
}
