//! [`ApiClient`]: a typed client of the api server (`so1s serve`), used by the `so1s` CLI
//! and by programs that deploy models.
//!
//! Every call carries the bearer token it was given. An error answer becomes
//! [`Error::Remote`] with the server's status, `error_type` and message; a server that
//! cannot be reached becomes [`Error::Unreachable`].

use crate::auth::{Role, Token};
use crate::events::Event;
use crate::{Error, Result};
use futures::StreamExt;
use serde_json::{json, Value};

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
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
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

    /// Sends a request; a success answer's JSON body (null when empty), or the error.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        answer(request.send().await.map_err(transport)?).await
    }

    /// Uploads an archive (`.tar.gz` or `.zip` bytes) as a new version of `model`; returns
    /// the stored version's record (`version`, `links.events`, ...).
    pub async fn upload(&self, model: &str, archive: Vec<u8>) -> Result<Value> {
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/models/{model}/versions"),
            )
            .header("content-type", "application/octet-stream")
            .body(archive);
        self.send(request).await
    }

    /// Every model with its live version.
    pub async fn models(&self) -> Result<Value> {
        self.send(self.request(reqwest::Method::GET, "/v1/models"))
            .await
    }

    /// One model and its versions.
    pub async fn model(&self, model: &str) -> Result<Value> {
        let path = format!("/v1/models/{model}");
        self.send(self.request(reqwest::Method::GET, &path)).await
    }

    /// One version's record.
    pub async fn version(&self, model: &str, version: &str) -> Result<Value> {
        let path = format!("/v1/models/{model}/versions/{version}");
        self.send(self.request(reqwest::Method::GET, &path)).await
    }

    /// Follows a version's events until it settles (live, failed or retired), calling
    /// `on_event` for each, history first.
    pub async fn follow_events(
        &self,
        model: &str,
        version: &str,
        mut on_event: impl FnMut(Event),
    ) -> Result<()> {
        let path = format!("/v1/models/{model}/versions/{version}/events");
        let response = self
            .request(reqwest::Method::GET, &path)
            .send()
            .await
            .map_err(transport)?;
        if !response.status().is_success() {
            return answer(response).await.map(|_| ());
        }
        let mut stream = response.bytes_stream();
        let mut parser = SseParser::default();
        while let Some(chunk) = stream.next().await {
            for data in parser.push(&chunk.map_err(transport)?) {
                if let Ok(event) = serde_json::from_str::<Event>(&data) {
                    on_event(event);
                }
            }
        }
        Ok(())
    }

    /// Rolls `model` back to the version that served before; returns the new live record.
    pub async fn rollback(&self, model: &str) -> Result<Value> {
        let path = format!("/v1/models/{model}/rollback");
        self.send(self.request(reqwest::Method::POST, &path)).await
    }

    /// Rolls out a `built` or `retired` version of `model`, whatever is live; returns its
    /// live record.
    pub async fn promote(&self, model: &str, version: &str) -> Result<Value> {
        let path = format!("/v1/models/{model}/versions/{version}/promote");
        self.send(self.request(reqwest::Method::POST, &path)).await
    }

    /// Deletes a version that is not serving.
    pub async fn delete(&self, model: &str, version: &str) -> Result<()> {
        let path = format!("/v1/models/{model}/versions/{version}");
        self.send(self.request(reqwest::Method::DELETE, &path))
            .await
            .map(|_| ())
    }

    /// A prediction through the gateway.
    pub async fn predict(&self, model: &str, text: &str) -> Result<Value> {
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/inference/{model}/predict"),
            )
            .json(&json!({ "text": text }));
        self.send(request).await
    }

    /// Makes a token (admin); the answer holds it in `token`, the only time it is shown.
    pub async fn create_token(&self, name: &str, role: Role) -> Result<Value> {
        let request = self
            .request(reqwest::Method::POST, "/v1/tokens")
            .json(&json!({ "name": name, "role": role }));
        self.send(request).await
    }

    /// The tokens that are not revoked (admin).
    pub async fn tokens(&self) -> Result<Value> {
        self.send(self.request(reqwest::Method::GET, "/v1/tokens"))
            .await
    }

    /// Revokes a token by name (admin).
    pub async fn revoke_token(&self, name: &str) -> Result<Value> {
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
    Err(Error::Remote {
        status: status.as_u16(),
        error_type: body["error_type"].as_str().unwrap_or("unknown").to_owned(),
        message: body["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string()),
    })
}

fn transport(error: reqwest::Error) -> Error {
    if error.is_connect() {
        Error::Unreachable(error.to_string())
    } else {
        Error::Remote {
            status: 0,
            error_type: "transport".into(),
            message: error.to_string(),
        }
    }
}

/// Splits a server-sent events byte stream into the `data` of each message.
#[derive(Debug, Default)]
struct SseParser {
    buffer: String,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.push_str(&String::from_utf8_lossy(bytes));
        let mut messages = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let message: String = self.buffer.drain(..end + 2).collect();
            let data: Vec<&str> = message
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                messages.push(data.join("\n"));
            }
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_messages_split_across_chunks_are_joined() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: progress\ndata: {\"a\"").is_empty());
        let messages = parser.push(b": 1}\n\n:keep-alive\n\ndata: x\ndata: y\n\n");
        assert_eq!(messages, ["{\"a\": 1}", "x\ny"]);
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let client = ApiClient::new("http://h:1/", Some(Token::new("so1s_secret")));
        let debug = format!("{client:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert_eq!(client.base(), "http://h:1");
    }
}
