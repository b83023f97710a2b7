//! The api server's routes in process (`warp::test` against
//! [`so1s_core::http::api::routes`]), over a [`TestPlatform`]: status codes, headers and
//! JSON shapes in milliseconds, without spawning `so1s serve` or loading a model. The bounds
//! of the connection loop (head timeouts and sizes) are the end-to-end tests' (so1s-bin).

use crate::support::{fake_archive, registry_path, TestPlatform, PATIENCE};
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use so1s_core::auth::{Role, Token, TokenStore, Tokens};
use so1s_core::http::api::{self, ApiConfig, ApiLimits};
use so1s_core::platform::PlatformOptions;
use so1s_core::registry::VersionState;
use std::sync::Arc;
use std::time::Duration;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

/// The `SO1S_ADMIN_TOKEN` of these tests.
const ADMIN: &str = "so1s_test_admin";

/// The routes over a test platform, and a token of each role.
struct TestApi {
    t: TestPlatform,
    routes: BoxedFilter<(Response,)>,
    viewer: String,
    deployer: String,
}

/// What a route answered.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    /// The error body every failure has: `{"error": "...", "error_type": "..."}`.
    fn error(&self, status: u16, error_type: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        assert_eq!(self.header("content-type"), "application/json");
        let body = self.json();
        assert_eq!(body["error_type"], error_type, "{body}");
        assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
        body["error"].as_str().unwrap().to_owned()
    }
}

impl TestApi {
    async fn start() -> Self {
        Self::with_limits(ApiLimits::default()).await
    }

    async fn with_limits(limits: ApiLimits) -> Self {
        Self::with_config(limits, true).await
    }

    async fn with_config(limits: ApiLimits, dashboard: bool) -> Self {
        Self::over(TestPlatform::start().await, limits, dashboard)
    }

    /// The routes over `t`.
    fn over(t: TestPlatform, limits: ApiLimits, dashboard: bool) -> Self {
        // The tokens live in the registry's database, as in `so1s serve`.
        let store = TokenStore::open(&registry_path(&t.data)).unwrap();
        let tokens = Arc::new(Tokens::new(store, Some(Token::new(ADMIN))));
        let (_, viewer) = tokens.create("v", Role::Viewer).unwrap();
        let (_, deployer) = tokens.create("d", Role::Deployer).unwrap();
        let config = ApiConfig {
            tokens,
            inference_auth: false,
            limits,
            dashboard,
        };
        let routes = api::routes(t.platform.clone(), config)
            .unwrap()
            .map(Reply::into_response)
            .boxed();
        Self {
            t,
            routes,
            viewer: viewer.expose().to_owned(),
            deployer: deployer.expose().to_owned(),
        }
    }

    /// A request, with `Authorization: Bearer <token>` if `token` is given.
    fn request(method: &str, path: &str, token: Option<&str>) -> warp::test::RequestBuilder {
        let request = warp::test::request().method(method).path(path);
        match token {
            Some(token) => request.header("authorization", format!("Bearer {token}")),
            None => request,
        }
    }

    async fn send(&self, request: warp::test::RequestBuilder) -> Answer {
        let response = tokio::time::timeout(PATIENCE, request.reply(&self.routes))
            .await
            .expect("the route answered in time");
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>) -> Answer {
        self.send(Self::request(method, path, token)).await
    }

    /// Uploads a fake archive (see `fake_archive`) as the deployer; expects 202.
    async fn upload(&self, model: &str, script: &str) -> Value {
        let request = Self::request(
            "POST",
            &format!("/v1/models/{model}/versions"),
            Some(&self.deployer),
        )
        .header("content-type", "application/gzip")
        .body(fake_archive(script));
        let answer = self.send(request).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
        answer.json()
    }

    async fn get(&self, path: &str) -> Value {
        let answer = self.call("GET", path, Some(&self.viewer)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {:?}", answer.body);
        answer.json()
    }
}

/// A server-sent event stream's events: (event name, data as JSON).
fn sse(body: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(body).unwrap();
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {block:?}"))
                    .trim()
                    .to_owned()
            };
            let data = serde_json::from_str(&field("data:")).unwrap();
            (field("event:"), data)
        })
        .collect()
}

fn states(events: &[(String, Value)]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|(_, data)| data["state"].as_str())
        .collect()
}

#[tokio::test]
async fn tokens_and_roles_guard_the_management_routes() {
    let api = TestApi::start().await;
    let (viewer, deployer) = (Some(api.viewer.as_str()), Some(api.deployer.as_str()));

    let none = api.call("GET", "/v1/models", None).await;
    let error = none.error(401, "unauthorized");
    assert!(error.contains("this route needs a token"), "{error}");
    assert_eq!(none.header("www-authenticate"), "Bearer realm=\"so1s\"");
    let bogus = api.call("GET", "/v1/models", Some("so1s_0000")).await;
    let error = bogus.error(401, "unauthorized");
    assert_eq!(error, "the token is unknown or revoked");
    let basic = TestApi::request("GET", "/v1/models", None).header("authorization", "Basic eA==");
    api.send(basic).await.error(401, "unauthorized");
    for token in [viewer, deployer, Some(ADMIN)] {
        assert_eq!(api.call("GET", "/v1/models", token).await.status, 200);
    }
    let who = api.call("GET", "/v1/whoami", viewer).await.json();
    assert_eq!(who, json!({"name": "v", "role": "viewer"}));
    let who = api.call("GET", "/v1/whoami", Some(ADMIN)).await.json();
    assert_eq!(who, json!({"name": "SO1S_ADMIN_TOKEN", "role": "admin"}));

    // Uploading needs a deployer: a viewer's or nobody's upload stores nothing.
    let upload = |token: Option<&str>| {
        TestApi::request("POST", "/v1/models/m/versions", token).body(fake_archive(""))
    };
    let error = api.send(upload(viewer)).await.error(403, "forbidden");
    assert_eq!(
        error,
        "the token `v` has the role viewer; this needs deployer"
    );
    api.send(upload(None)).await.error(401, "unauthorized");
    api.call("GET", "/v1/models/m", Some(ADMIN))
        .await
        .error(404, "not_found");
    assert!(!api.t.data.join("store/models/m").exists());
    assert_eq!(api.send(upload(deployer)).await.status, 202);
    api.t.settle("m", "v1").await;

    // So do rollbacks, promotions and deletes; events are a viewer's.
    for (method, path) in [
        ("POST", "/v1/models/m/rollback"),
        ("POST", "/v1/models/m/versions/v1/promote"),
        ("DELETE", "/v1/models/m/versions/v1"),
    ] {
        api.call(method, path, viewer).await.error(403, "forbidden");
        api.call(method, path, None)
            .await
            .error(401, "unauthorized");
    }
    let events = "/v1/models/m/versions/v1/events";
    api.call("GET", events, None)
        .await
        .error(401, "unauthorized");
    assert_eq!(api.call("GET", events, viewer).await.status, 200);

    // Tokens are the admin's.
    for token in [viewer, deployer] {
        api.call("GET", "/v1/tokens", token)
            .await
            .error(403, "forbidden");
    }
    let listed = api.call("GET", "/v1/tokens", Some(ADMIN)).await.json();
    let names: Vec<&str> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["v", "d"], "{listed}");
    let create = TestApi::request("POST", "/v1/tokens", Some(ADMIN))
        .json(&json!({"name": "ci", "role": "deployer"}));
    let created = api.send(create).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let token = created.json()["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("so1s_"), "{token}");
    let who = api.call("GET", "/v1/whoami", Some(&token)).await.json();
    assert_eq!(who, json!({"name": "ci", "role": "deployer"}));
    let revoked = api.call("DELETE", "/v1/tokens/v", Some(ADMIN)).await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    api.call("GET", "/v1/models", viewer)
        .await
        .error(401, "unauthorized");
}

#[tokio::test]
async fn an_upload_answers_202_with_its_location_and_links() {
    let api = TestApi::start().await;
    let archive = fake_archive("log raw");
    let request = TestApi::request("POST", "/v1/models/m/versions", Some(&api.deployer))
        .header("content-type", "application/gzip")
        .body(&archive);
    let answer = api.send(request).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(answer.header("location"), "/v1/models/m/versions/v1");
    let body = answer.json();
    assert_eq!(body["model"], "m");
    assert_eq!(body["version"], "v1");
    assert_eq!(body["state"], "stored");
    assert_eq!(body["format"], "tar-gz");
    assert_eq!(body["size"], archive.len());
    assert_eq!(body["sha256"], format!("{:x}", Sha256::digest(&archive)));
    assert_eq!(
        body["links"],
        json!({
            "self": "/v1/models/m/versions/v1",
            "events": "/v1/models/m/versions/v1/events"
        })
    );
    assert_eq!(api.get("/v1/models/m/versions/v1").await["version"], "v1");

    // The same archive as the multipart field `model`, after another field.
    let mut multipart = b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n\
        --XyZ\r\nContent-Disposition: form-data; name=\"model\"; filename=\"m.tar.gz\"\r\n\r\n"
        .to_vec();
    multipart.extend_from_slice(&archive);
    multipart.extend_from_slice(b"\r\n--XyZ--\r\n");
    let request = TestApi::request("POST", "/v1/models/m/versions", Some(&api.deployer))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(multipart);
    let answer = api.send(request).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(answer.header("location"), "/v1/models/m/versions/v2");
    assert_eq!(answer.json()["sha256"], body["sha256"]);

    // What is not an archive is refused and stores nothing.
    let request = TestApi::request("POST", "/v1/models/other/versions", Some(&api.deployer))
        .body("plain text");
    let error = api.send(request).await.error(400, "bad_upload");
    assert_eq!(error, "the archive is neither a .tar.gz nor a .zip");
    api.call("GET", "/v1/models/other", Some(&api.viewer))
        .await
        .error(404, "not_found");
    let error = api
        .call("POST", "/v1/models/Bad_Name/versions", Some(&api.deployer))
        .await
        .error(422, "validation");
    assert!(
        error.starts_with("invalid model name `Bad_Name`"),
        "{error}"
    );
}

#[tokio::test]
async fn an_upload_past_the_build_queue_answers_429_with_retry_after() {
    let t = TestPlatform::with_options(PlatformOptions {
        max_concurrent_builds: 1,
        max_queued_builds: 1,
        ..Default::default()
    })
    .await;
    let api = TestApi::over(t, ApiLimits::default(), false);
    api.upload("m", "wait first").await;
    api.t.builder.calls().wait_for("build m v1").await;
    api.upload("m", "").await;
    let request = TestApi::request("POST", "/v1/models/m/versions", Some(&api.deployer))
        .header("content-type", "application/gzip")
        .body(fake_archive(""));
    let answer = api.send(request).await;
    assert_eq!(answer.header("retry-after"), "10");
    let error = answer.error(429, "busy");
    assert!(
        error.contains("1 uploads already wait for a build"),
        "{error}"
    );
    api.call("GET", "/v1/models/m/versions/v3", Some(&api.viewer))
        .await
        .error(404, "not_found");
    api.t.builder.release("first");
}

#[tokio::test]
async fn model_and_version_json_show_states_health_errors_and_links() {
    let api = TestApi::start().await;
    api.upload("m", "").await;
    api.t.settle("m", "v1").await;
    api.upload("m", "fail the weights are missing").await;
    api.t.settle("m", "v2").await;

    let model = api.get("/v1/models/m").await;
    assert_eq!(model["name"], "m");
    assert_eq!(model["live_version"], "v1");
    assert_eq!(model["default"], true);
    assert_eq!(model["predict"], "/inference/m/predict");
    let health = &model["health"];
    assert_eq!(
        (&health["status"], &health["version"], &health["ready"]),
        (&json!("healthy"), &json!("v1"), &json!(true)),
        "{model}"
    );
    assert_eq!(health["instances"][0]["name"], "fake v1");
    let versions = model["versions"].as_array().unwrap();
    let summary: Vec<(&str, &str)> = versions
        .iter()
        .map(|r| (r["version"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(summary, [("v1", "live"), ("v2", "failed")]);
    assert_eq!(
        versions[1]["links"]["events"],
        "/v1/models/m/versions/v2/events"
    );

    let live = api.get("/v1/models/m/versions/v1").await;
    assert_eq!(live["state"], "live");
    assert_eq!(
        live["artifact"],
        json!({"kind": "image", "reference": "fake/m:v1"})
    );
    assert!(live["live_since_ms"].is_u64(), "{live}");
    assert!(live.get("error").is_none(), "{live}");
    let failed = api.get("/v1/models/m/versions/v2").await;
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["error"], "build failed: the weights are missing");
    assert!(failed.get("artifact").is_none(), "{failed}");

    let list = api.get("/v1/models").await;
    assert_eq!(
        list,
        json!({"models": [{
            "name": "m",
            "live_version": "v1",
            "versions": 2,
            "latest": {"version": "v2", "state": "failed"},
        }]})
    );

    let viewer = Some(api.viewer.as_str());
    let error = api
        .call("GET", "/v1/models/nope", viewer)
        .await
        .error(404, "not_found");
    assert_eq!(error, "not found: model nope");
    api.call("GET", "/v1/models/m/versions/v9", viewer)
        .await
        .error(404, "not_found");
    api.call("GET", "/v1/models/m/versions/latest", viewer)
        .await
        .error(422, "validation");
}

#[tokio::test]
async fn delete_answers_204_or_409_and_rollback_409_without_an_earlier_version() {
    let api = TestApi::start().await;
    let deployer = Some(api.deployer.as_str());
    api.upload("m", "").await;
    api.t.settle("m", "v1").await;
    api.upload("m", "fail broken").await;
    api.t.settle("m", "v2").await;

    let error = api
        .call("DELETE", "/v1/models/m/versions/v1", deployer)
        .await
        .error(409, "conflict");
    assert_eq!(
        error,
        "m v1 is live: only failed, built, retired or superseded versions can be deleted"
    );
    let deleted = api
        .call("DELETE", "/v1/models/m/versions/v2", deployer)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.body.is_empty());
    api.call("GET", "/v1/models/m/versions/v2", deployer)
        .await
        .error(404, "not_found");
    api.call("DELETE", "/v1/models/m/versions/v2", deployer)
        .await
        .error(404, "not_found");

    let error = api
        .call("POST", "/v1/models/m/rollback", deployer)
        .await
        .error(409, "conflict");
    assert_eq!(
        error,
        "m has no earlier version that served to roll back to"
    );
    let error = api
        .call("POST", "/v1/models/m/versions/v1/promote", deployer)
        .await;
    assert_eq!(error.status, 200, "promoting the live version is a no-op");
    assert_eq!(error.json()["state"], "live");

    // With an earlier version, a rollback answers the record it left live.
    api.upload("m", "").await;
    api.t.settle("m", "v3").await;
    let back = api.call("POST", "/v1/models/m/rollback", deployer).await;
    assert_eq!(back.status, 200, "{:?}", back.body);
    let body = back.json();
    assert_eq!(
        (&body["version"], &body["state"]),
        (&json!("v1"), &json!("live"))
    );
    assert_eq!(body["links"]["self"], "/v1/models/m/versions/v1");
    assert_eq!(api.t.state("m", "v3"), VersionState::Retired);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_the_json_error_shape() {
    let api = TestApi::start().await;
    let error = api.call("GET", "/nope", None).await.error(404, "not_found");
    assert_eq!(error, "no such route");
    api.call("GET", "/v1/models/m/versions/v1/nope", Some(&api.viewer))
        .await
        .error(404, "not_found");
    let error = api
        .call("PUT", "/v1/models", Some(&api.viewer))
        .await
        .error(405, "method_not_allowed");
    assert_eq!(error, "this route does not take that method");
    let health = api.call("GET", "/healthz", None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"status": "alive"}));
    // The gateway, open by default, with nothing live.
    let predict = TestApi::request("POST", "/inference/predict", None).json(&json!({"text": "hi"}));
    let error = api.send(predict).await.error(503, "not_live");
    assert!(error.starts_with("no model is deployed yet"), "{error}");
    let predict =
        TestApi::request("POST", "/inference/m/predict", None).json(&json!({"text": "hi"}));
    let error = api.send(predict).await.error(404, "not_found");
    assert_eq!(error, "not found: unknown model m");
}

#[tokio::test]
async fn the_dashboard_is_served_without_a_token_under_a_strict_policy_and_can_be_turned_off() {
    let api = TestApi::start().await;
    let page = api.call("GET", "/", None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    let policy = page.header("content-security-policy");
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(page.header("x-frame-options"), "DENY");
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains(r#"<script src="/ui/app.js" defer></script>"#));
    assert!(html.contains(r#"type="password""#), "no token field");
    let script = api.call("GET", "/ui/app.js", None).await;
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        "text/javascript; charset=utf-8"
    );
    assert!(String::from_utf8_lossy(&script.body).contains("/v1/whoami"));
    api.call("GET", "/ui/nope.js", None)
        .await
        .error(404, "not_found");
    api.call("POST", "/", None)
        .await
        .error(405, "method_not_allowed");
    // The page holds no data: what it shows still needs a token.
    api.call("GET", "/v1/models", None)
        .await
        .error(401, "unauthorized");

    let off = TestApi::with_config(ApiLimits::default(), false).await;
    off.call("GET", "/", None).await.error(404, "not_found");
    off.call("GET", "/ui/app.js", None)
        .await
        .error(404, "not_found");
}

#[tokio::test]
async fn the_events_route_replays_a_finished_versions_history_and_ends() {
    let api = TestApi::start().await;
    api.upload("m", "log unpacking").await;
    api.t.settle("m", "v1").await;
    api.upload("m", "fail no weights").await;
    api.t.settle("m", "v2").await;

    let answer = api
        .call("GET", "/v1/models/m/versions/v1/events", Some(&api.viewer))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), "text/event-stream");
    let events = sse(&answer.body);
    assert_eq!(
        events.len(),
        api.t.events("m", "v1").len(),
        "the whole history"
    );
    assert_eq!(events[0].0, "progress");
    assert!(
        events[0].1["message"]
            .as_str()
            .unwrap()
            .starts_with("stored m v1"),
        "{:?}",
        events[0]
    );
    assert_eq!(events[0].1["stage"], "upload");
    assert!(
        events
            .iter()
            .any(|(kind, data)| kind == "log" && data["message"] == "unpacking"),
        "{events:?}"
    );
    assert_eq!(states(&events), ["building", "built", "deploying", "live"]);

    let failed = api
        .call("GET", "/v1/models/m/versions/v2/events", Some(&api.viewer))
        .await;
    let events = sse(&failed.body);
    let (kind, last) = events.last().unwrap();
    assert_eq!(kind, "error");
    assert_eq!(last["state"], "failed");
    assert_eq!(last["message"], "build failed: no weights");

    api.call("GET", "/v1/models/m/versions/v9/events", Some(&api.viewer))
        .await
        .error(404, "not_found");
}

#[tokio::test]
async fn an_event_stream_follows_a_version_until_it_settles_and_streams_are_bounded() {
    let api = Arc::new(
        TestApi::with_limits(ApiLimits {
            max_event_subscribers: 1,
            ..ApiLimits::default()
        })
        .await,
    );
    api.upload("m", "wait gate\nlog after the gate").await;
    api.t.builder.calls().wait_for("build m v1").await;
    let following = {
        let api = api.clone();
        tokio::spawn(async move {
            api.call("GET", "/v1/models/m/versions/v1/events", Some(&api.viewer))
                .await
        })
    };
    // Once it follows (give its task a moment to start), the version's one place is taken.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let busy = api
        .call("GET", "/v1/models/m/versions/v1/events", Some(&api.viewer))
        .await;
    let error = busy.error(429, "busy");
    assert!(error.contains("already has 1 event subscribers"), "{error}");
    assert!(
        !following.is_finished(),
        "the stream ended before v1 settled"
    );

    api.t.builder.release("gate");
    let answer = tokio::time::timeout(Duration::from_secs(10), following)
        .await
        .expect("the stream ends once v1 settles")
        .unwrap();
    let events = sse(&answer.body);
    assert!(
        events.iter().any(|(_, e)| e["message"] == "after the gate"),
        "{events:?}"
    );
    assert_eq!(states(&events), ["building", "built", "deploying", "live"]);
    // Its place is free again.
    let again = api
        .call("GET", "/v1/models/m/versions/v1/events", Some(&api.viewer))
        .await;
    assert_eq!(again.status, 200);
}
