//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver)
//! against `so1s serve` on the embedded default, with MiniLM. A deployer signs in with a
//! token typed into the password field, sees the live version, uploads a second version
//! through the file input and watches its events reach `live`, predicts from the page, rolls
//! back and splits traffic through the confirmation dialog; a viewer sees no controls that
//! act; the browser logs no SEVERE message. Screenshots go to the test's target folder (and
//! to `docs/` with `SO1S_DOCS_SCREENSHOTS=1`).

mod common;

use common::api::{first_values, minilm_archive, Api};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use so1s_core::auth::Role;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// chromedriver (so1s-bin/build.rs: `SO1S_CHROMEDRIVER`, which scripts/test.sh sets).
#[cfg(so1s_browser)]
const CHROMEDRIVER: &str = env!("SO1S_CHROMEDRIVER_BIN");
#[cfg(not(so1s_browser))]
const CHROMEDRIVER: &str = "built without SO1S_CHROMEDRIVER: no chromedriver";

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER} does not start: {e}"));
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while reqwest::get(format!("{}/status", driver.url))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no chromedriver"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver
    }

    /// A headless Chromium at 1280×800 that keeps its console messages.
    async fn browser(&self) -> Client {
        let options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,800"],
        });
        let capabilities = json!({
            "goog:chromeOptions": options,
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("chromedriver starts a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver's console log (`POST /session/{id}/se/log`): the messages since the last
/// read, each `{"level", "message", ...}`.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// The browser's SEVERE console messages since the last read.
async fn severe(browser: &Client) -> Vec<String> {
    let log = browser
        .issue_cmd(BrowserLog)
        .await
        .expect("the console log");
    log.as_array()
        .unwrap_or_else(|| panic!("not a log: {log}"))
        .iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

const PATIENCE: Duration = Duration::from_secs(20);

/// The element `css` names, once it is there (at most `PATIENCE`).
async fn find(browser: &Client, css: &str) -> Element {
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
}

/// The text of `css` now (None while it is missing or being redrawn).
async fn text_of(browser: &Client, css: &str) -> Option<String> {
    browser
        .find(Locator::Css(css))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Waits (at most `limit`) until the text of `css` satisfies `check`; returns it.
async fn text_until(
    browser: &Client,
    css: &str,
    limit: Duration,
    check: impl Fn(&str) -> bool,
) -> String {
    let started = Instant::now();
    loop {
        let text = text_of(browser, css).await;
        if let Some(text) = text.as_deref().filter(|t| check(t)) {
            return text.to_owned();
        }
        assert!(
            started.elapsed() < limit,
            "{css} never matched; it reads {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `act` until it succeeds, at most `PATIENCE` long: an element found by css goes stale
/// when the page redraws it (its 5 s refresh), and `act` finds it again each time.
async fn retried<F, Fut>(what: &str, mut act: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
{
    let started = Instant::now();
    loop {
        match act().await {
            Ok(()) => return,
            Err(e) => assert!(started.elapsed() < PATIENCE, "cannot {what}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks `css`, finding it again if the page redrew it meanwhile.
async fn click(browser: &Client, css: &str) {
    retried(&format!("click {css}"), || async {
        find(browser, css).await.click().await
    })
    .await;
}

/// Types `text` into the field `css` (emptied first), again if it was redrawn meanwhile.
async fn type_into(browser: &Client, css: &str, text: &str) {
    retried(&format!("type into {css}"), || async {
        let field = find(browser, css).await;
        field.clear().await?;
        field.send_keys(text).await
    })
    .await;
}

/// Where this run's screenshots go.
fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves a screenshot as `name` (and into `docs/` when `SO1S_DOCS_SCREENSHOTS` is set).
async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(screenshots().join(name), &png).unwrap();
    if std::env::var_os("SO1S_DOCS_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(name), &png).unwrap();
    }
}

/// A new api token with `role`, made through the api with the admin token.
async fn token(api: &Api, name: &str, role: Role) -> String {
    api.typed.create_token(name, role).await.unwrap().token
}

/// Whether the element `css` finds is shown.
async fn displayed(browser: &Client, css: &str) -> bool {
    find(browser, css).await.is_displayed().await.unwrap()
}

/// The token this tab keeps in its sessionStorage (null when there is none).
async fn kept_token(browser: &Client) -> Value {
    browser
        .execute("return sessionStorage.getItem('so1s.token')", vec![])
        .await
        .unwrap()
}

/// The fact `fact` (live, latest, traffic, health...) of the model's card.
fn fact(model: &str, fact: &str) -> String {
    format!(r#"article[data-model="{model}"] [data-fact="{fact}"] dd"#)
}

/// Signs in with `token`: typed into the password field, sent with Enter (the keyboard) or
/// the button.
async fn sign_in(browser: &Client, token: &str, with_enter: bool) {
    let field = find(browser, "#token").await;
    assert_eq!(
        field.attr("type").await.unwrap().as_deref(),
        Some("password")
    );
    type_into(browser, "#token", token).await;
    if with_enter {
        field.send_keys(&Key::Enter).await.unwrap();
    } else {
        click(browser, "#sign-in-form button[type=submit]").await;
    }
}

/// The (width, scroll width) of the page: equal when nothing overflows sideways.
async fn widths(browser: &Client) -> (u64, u64) {
    let sizes = browser
        .execute(
            "return [document.documentElement.clientWidth, document.documentElement.scrollWidth]",
            vec![],
        )
        .await
        .unwrap();
    (sizes[0].as_u64().unwrap(), sizes[1].as_u64().unwrap())
}

#[cfg_attr(
    not(so1s_browser),
    ignore = "needs chromium and chromedriver: build with SO1S_CHROMEDRIVER set (scripts/test.sh does)"
)]
#[tokio::test]
async fn the_dashboard_signs_in_uploads_follows_events_predicts_and_hides_actions_from_viewers() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(&tmp.path().join("data"));
    api.upload("minilm", minilm_archive()).await;
    assert_eq!(api.settle("minilm", "v1").await["state"], "live");
    let deployer = token(&api, "ui-deployer", Role::Deployer).await;
    let viewer = token(&api, "ui-viewer", Role::Viewer).await;
    let archive = tmp.path().join("minilm.tar.gz");
    std::fs::write(&archive, minilm_archive()).unwrap();

    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser.goto(&format!("{}/", api.base)).await.unwrap();
    assert_eq!(browser.title().await.unwrap(), "so1s");

    // A deployer signs in and sees MiniLM live.
    sign_in(&browser, &deployer, false).await;
    text_until(&browser, "#who", PATIENCE, |t| {
        t == "ui-deployer · deployer"
    })
    .await;
    text_until(&browser, &fact("minilm", "live"), PATIENCE, |t| t == "v1").await;
    assert!(displayed(&browser, "#upload-panel").await);
    assert_eq!(
        kept_token(&browser).await,
        json!(deployer),
        "the token is kept in sessionStorage"
    );

    // Upload v2 through the file input; its events arrive live until it is live.
    type_into(&browser, "#upload-name", "minilm").await;
    find(&browser, "#upload-file")
        .await
        .send_keys(archive.to_str().unwrap())
        .await
        .unwrap();
    click(&browser, "#upload-button").await;
    text_until(&browser, "#events-of", PATIENCE, |t| t == "minilm v2").await;
    text_until(&browser, "#events-state", Duration::from_secs(120), |t| {
        t == "live"
    })
    .await;
    let progress = find(&browser, "#upload-progress").await;
    assert_eq!(
        progress.attr("value").await.unwrap().as_deref(),
        Some("100")
    );
    let events = browser.find_all(Locator::Css("#events li")).await.unwrap();
    let mut lines = Vec::new();
    for event in &events {
        lines.push(event.text().await.unwrap());
    }
    assert!(lines.len() >= 4, "too few events: {lines:?}");
    for stage in ["upload", "build", "rollout"] {
        assert!(
            lines.iter().any(|line| line.contains(stage)),
            "no {stage} event in {lines:?}"
        );
    }
    text_until(&browser, &fact("minilm", "live"), PATIENCE, |t| t == "v2").await;
    assert_eq!(api.model("minilm").await["live_version"], "v2");
    // The Precision column shows what the build measured and chose (the record's), or "—"
    // where nothing was measured (no native bf16).
    let precision = api.version("minilm", "v2").await["artifact"]["precision"].clone();
    let cell = r#"article[data-model="minilm"] tr[data-version="v2"] td:nth-of-type(4)"#;
    let expected = match precision["chosen"].as_str() {
        Some(chosen) => {
            let cosine = precision["drift"]["value"].as_f64().unwrap();
            format!("{chosen} cos {cosine:.5}")
        }
        None => "—".to_owned(),
    };
    text_until(&browser, cell, PATIENCE, |t| t == expected).await;

    // Try it: the page's prediction is MiniLM's embedding of the text.
    type_into(&browser, "#try-text", "Hello world").await;
    click(&browser, "#try-button").await;
    text_until(&browser, "#prediction-dim", PATIENCE, |t| t == "384").await;
    let shown = browser
        .find_all(Locator::Css("#prediction-values li"))
        .await
        .unwrap();
    assert_eq!(shown.len(), 8);
    // The values shown (4 decimals) are the api's own answer for the same text, which is
    // MiniLM's embedding.
    let answer = api
        .predict_json("/inference/minilm/predict", "Hello world")
        .await;
    assert!(common::hello_world_cosine_of(&answer) > 0.9999);
    for (element, expected) in shown.iter().zip(first_values(&answer)) {
        let value: f64 = element.text().await.unwrap().parse().unwrap();
        assert!(
            (value - expected).abs() < 1.5e-4,
            "shown {value}, the api answers {expected}"
        );
    }

    // Roll back: Escape cancels the confirmation, then confirming rolls back.
    click(&browser, r#"[data-key="minilm:rollback"]"#).await;
    let dialog = find(&browser, "#confirm").await;
    assert!(dialog.is_displayed().await.unwrap());
    // The dialog opens with Cancel focused.
    find(&browser, "#confirm button[value=cancel]")
        .await
        .send_keys(&Key::Escape)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!dialog.is_displayed().await.unwrap());
    assert_eq!(api.model("minilm").await["live_version"], "v2");
    click(&browser, r#"[data-key="minilm:rollback"]"#).await;
    click(&browser, "#confirm-ok").await;
    text_until(&browser, &fact("minilm", "live"), PATIENCE, |t| t == "v1").await;
    assert_eq!(api.model("minilm").await["live_version"], "v1");

    // Split traffic 70/30 through the editor.
    click(&browser, r#"[data-key="minilm:traffic"]"#).await;
    type_into(&browser, "#weight-minilm-v1", "70").await;
    type_into(&browser, "#weight-minilm-v2", "30").await;
    click(&browser, r#"[data-key="minilm:split"]"#).await;
    click(&browser, "#confirm-ok").await;
    text_until(&browser, &fact("minilm", "traffic"), PATIENCE, |t| {
        t == "v1 70% · v2 30%"
    })
    .await;
    assert_eq!(
        api.get_json("/v1/models/minilm/traffic").await,
        json!({"v1": 70, "v2": 30})
    );
    find(&browser, r#"article[data-model="minilm"] .split"#).await;

    // The idle policy through its editor: the Scale fact and the api say it.
    text_until(&browser, &fact("minilm", "scale"), PATIENCE, |t| {
        t == "always on"
    })
    .await;
    type_into(&browser, "#idle-minilm", "3600").await;
    click(&browser, r#"[data-key="minilm:set-idle"]"#).await;
    click(&browser, "#confirm-ok").await;
    text_until(&browser, &fact("minilm", "scale"), PATIENCE, |t| {
        t == "running · idle after 3600 s · 0 wake-ups"
    })
    .await;
    assert_eq!(api.model("minilm").await["scale"]["idle_after_s"], 3600);
    browser
        .execute("window.scrollTo(0, 0)", vec![])
        .await
        .unwrap();
    screenshot(&browser, "dashboard.png").await;

    // A phone-sized window: nothing overflows sideways.
    browser.set_window_size(390, 844).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (width, scroll) = widths(&browser).await;
    assert!(
        scroll <= width,
        "the page is {scroll} px wide in a {width} px window"
    );
    screenshot(&browser, "dashboard-phone.png").await;
    browser.set_window_size(1280, 800).await.unwrap();
    assert_eq!(severe(&browser).await, Vec::<String>::new());

    // Sign out: the token is gone from the tab.
    click(&browser, "#sign-out").await;
    assert!(displayed(&browser, "#sign-in").await);
    assert_eq!(kept_token(&browser).await, Value::Null);

    // A viewer (signing in with Enter) sees the models but nothing that acts.
    sign_in(&browser, &viewer, true).await;
    text_until(&browser, "#who", PATIENCE, |t| t == "ui-viewer · viewer").await;
    text_until(&browser, &fact("minilm", "traffic"), PATIENCE, |t| {
        t == "v1 70% · v2 30%"
    })
    .await;
    assert!(!displayed(&browser, "#upload-panel").await);
    for element in browser
        .find_all(Locator::Css("#upload-panel input"))
        .await
        .unwrap()
    {
        assert!(
            !element.is_displayed().await.unwrap(),
            "a viewer may upload"
        );
    }
    // The controls that act are not even in the page.
    for control in [
        r#"[data-key$=":rollback"]"#,
        r#"[data-key$=":promote"]"#,
        r#"[data-key$=":delete"]"#,
        r#"[data-key$=":split"]"#,
        r#"[data-key$=":weight"]"#,
    ] {
        let found = browser.find_all(Locator::Css(control)).await.unwrap();
        assert!(found.is_empty(), "a viewer has {control}");
    }
    assert!(
        browser
            .find_all(Locator::Css(r#"[data-key$=":events"]"#))
            .await
            .unwrap()
            .len()
            >= 2,
        "a viewer may read events"
    );
    screenshot(&browser, "dashboard-viewer.png").await;
    assert_eq!(severe(&browser).await, Vec::<String>::new());

    // A bad token is refused with a message; the console shows only that 401.
    click(&browser, "#sign-out").await;
    sign_in(&browser, "so1s_not-a-token", true).await;
    text_until(&browser, "#sign-in-error", PATIENCE, |t| {
        t == "That token is unknown or revoked."
    })
    .await;
    let messages = severe(&browser).await;
    assert!(
        messages
            .iter()
            .all(|m| m.contains("/v1/whoami") && m.contains("401")),
        "{messages:?}"
    );

    browser.close().await.unwrap();
    api.stop();
}
