//! The api server as an attacker meets it: tokens and roles on every management route, and
//! hostile requests and archives that must be refused in bounded memory.

mod common;

use common::api::{broken_model_archive, client_with_token, minilm_archive, tar_with_entry, Api};
use common::{growth, memory, minilm_dir, signal, MIB};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `so1s` CLI against `api`, finding the admin token in `data`.
fn so1s(api: &Api, data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_so1s"))
        .args(args)
        .env("SO1S_SERVER", &api.base)
        .env("SO1S_DATA_DIR", data)
        .env_remove("SO1S_TOKEN")
        .output()
        .unwrap()
}

fn created_token(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.lines().last().unwrap().trim().to_owned()
}

/// Files under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str, skip: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path != skip {
                let bytes = std::fs::read(&path).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn tokens_and_roles_guard_every_management_route() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let api = Api::start_logged(&data, &[], &log);
    let base = api.base.clone();

    // Tokens made with the CLI, which finds the admin token in the data directory.
    let viewer = created_token(&so1s(
        &api,
        &data,
        &["token", "create", "--role", "viewer", "--name", "v"],
    ));
    let deployer = created_token(&so1s(
        &api,
        &data,
        &["token", "create", "--role", "deployer", "--name", "d"],
    ));
    assert!(
        viewer.starts_with("so1s_") && viewer.len() == 69,
        "{viewer}"
    );
    let anonymous = reqwest::Client::new();
    let bogus = client_with_token("so1s_0000");
    let (as_viewer, as_deployer, as_admin) = (
        client_with_token(&viewer),
        client_with_token(&deployer),
        api.client.clone(),
    );

    let unauthorized = anonymous
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(
        unauthorized.headers()["www-authenticate"],
        "Bearer realm=\"so1s\""
    );
    let body: Value = unauthorized.json().await.unwrap();
    assert_eq!(body["error_type"], "unauthorized");
    assert_eq!(status(bogus.get(format!("{base}/v1/models"))).await, 401);
    for client in [&as_viewer, &as_deployer, &as_admin] {
        assert_eq!(status(client.get(format!("{base}/v1/models"))).await, 200);
    }
    let who: Value = as_viewer
        .get(format!("{base}/v1/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who, json!({"name": "v", "role": "viewer"}));

    // A cross-site form post (text/plain, no token) stores nothing.
    let cross_site = anonymous
        .post(format!("{base}/v1/models/pwn/versions"))
        .header("content-type", "text/plain")
        .header("origin", "https://evil.example")
        .body(tar_with_entry("config.json", b"{}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 401);
    assert_eq!(
        status(as_admin.get(format!("{base}/v1/models/pwn"))).await,
        404
    );
    assert!(!data.join("store/models/pwn").exists());

    // Uploads, rollbacks and deletes need a deployer.
    let upload = |client: &reqwest::Client| {
        client
            .post(format!("{base}/v1/models/m/versions"))
            .body(tar_with_entry("../evil", b"x"))
    };
    let forbidden = upload(&as_viewer).send().await.unwrap();
    assert_eq!(forbidden.status(), 403);
    let body: Value = forbidden.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("needs deployer"),
        "{body}"
    );
    assert_eq!(status(upload(&as_deployer)).await, 202);
    let record = api.settle("m", "v1").await;
    assert_eq!(record["state"], "failed");
    let events = anonymous.get(format!("{base}/v1/models/m/versions/v1/events"));
    assert_eq!(status(events).await, 401);
    let events = as_viewer.get(format!("{base}/v1/models/m/versions/v1/events"));
    assert_eq!(status(events).await, 200);
    let rollback = |c: &reqwest::Client| c.post(format!("{base}/v1/models/m/rollback"));
    assert_eq!(status(rollback(&as_viewer)).await, 403);
    assert_eq!(
        status(rollback(&as_deployer)).await,
        409,
        "nothing to roll back to"
    );
    let delete = |c: &reqwest::Client| c.delete(format!("{base}/v1/models/m/versions/v1"));
    assert_eq!(status(delete(&as_viewer)).await, 403);
    assert_eq!(status(delete(&as_deployer)).await, 204);

    // Tokens are the admin's.
    let new_token = json!({"name": "x", "role": "viewer"});
    for client in [&as_viewer, &as_deployer] {
        assert_eq!(status(client.get(format!("{base}/v1/tokens"))).await, 403);
        let create = client.post(format!("{base}/v1/tokens")).json(&new_token);
        assert_eq!(status(create).await, 403);
        assert_eq!(
            status(client.delete(format!("{base}/v1/tokens/v"))).await,
            403
        );
    }
    // Predictions stay open by default.
    let predict = anonymous
        .post(format!("{base}/inference/predict"))
        .json(&json!({"text": "hi"}));
    assert_eq!(status(predict).await, 503, "open, with nothing live");

    let listed = so1s(&api, &data, &["token", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    let line = |name: &str| {
        listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in {listed}"))
            .to_owned()
    };
    assert!(
        line("v").contains("viewer") && !line("v").ends_with("never"),
        "{listed}"
    );
    assert!(line("admin").contains("admin"), "{listed}");
    let revoked = so1s(&api, &data, &["token", "revoke", "v"]);
    assert!(revoked.status.success(), "{revoked:?}");
    assert_eq!(
        status(as_viewer.get(format!("{base}/v1/models"))).await,
        401
    );
    assert_eq!(
        status(as_deployer.get(format!("{base}/v1/models"))).await,
        200
    );
    api.stop();

    // No token in clear anywhere: not in the logs, not in the data directory (but the admin
    // token's own file).
    let admin_file = data.join("admin.token");
    let admin = std::fs::read_to_string(&admin_file)
        .unwrap()
        .trim()
        .to_owned();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("admin.token"),
        "the log says where the admin token is"
    );
    for token in [&viewer, &deployer, &admin] {
        let secret = &token[5..];
        assert!(!log_text.contains(secret), "a token reached the log");
        let found = files_containing(&data, secret, &admin_file);
        assert!(found.is_empty(), "a token is stored in clear in {found:?}");
    }

    // With --inference-auth, predictions need a token too.
    let data2 = tmp.path().join("data2");
    let api = Api::start_with(&data2, &["--inference-auth"]);
    let predict = |c: &reqwest::Client| {
        c.post(format!("{}/inference/predict", api.base))
            .json(&json!({"text": "hi"}))
    };
    assert_eq!(status(predict(&anonymous)).await, 401);
    assert_eq!(status(predict(&api.client)).await, 503);
    api.stop();
}

/// A tar.gz holding one file of `size` zeros, built from one compressed block repeated:
/// a few MB however large `size` is.
fn zeros_bomb(size: u64) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut compress = Compress::new(Compression::best(), false);
        let mut out = Vec::with_capacity(data.len() + 1024);
        compress
            .compress_vec(data, &mut out, FlushCompress::Full)
            .unwrap();
        out
    }
    let mut header = tar::Header::new_gnu();
    header.set_path("model/zeros.bin").unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    let chunk = deflate(&vec![0u8; MIB as usize]);
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    gz.extend(deflate(header.as_bytes()));
    for _ in 0..size / MIB {
        gz.extend(&chunk);
    }
    gz
}

/// A zip whose one entry is a link with a `size`-byte target.
fn zip_link_bomb(size: usize) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let target = "a".repeat(size);
    writer
        .add_symlink(
            "model/link",
            &target,
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
    writer.finish().unwrap().into_inner()
}

/// A tar.gz whose first header is a GNU long name claiming `size` bytes.
fn long_name_bomb(size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_size(size);
    header.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(header.as_bytes()).unwrap();
    let block = vec![b'a'; MIB as usize];
    for _ in 0..size / MIB {
        gz.write_all(&block).unwrap();
    }
    gz.finish().unwrap()
}

/// A tar.gz of `count` empty files.
fn many_files(count: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for i in 0..count {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, format!("model/f{i}"), std::io::empty())
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A multipart body whose first part's headers never end: `size` bytes of one header.
fn endless_headers(size: u64) -> reqwest::Body {
    let head = b"--B\r\nContent-Disposition: form-data; name=\"model\"\r\nX-Pad: ".to_vec();
    let pad = bytes::Bytes::from(vec![b'a'; MIB as usize]);
    let chunks = std::iter::once(bytes::Bytes::from(head))
        .chain(std::iter::repeat_n(pad, (size / MIB) as usize))
        .map(Ok::<_, std::io::Error>);
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn hostile_uploads_are_refused_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Slow and oversized requests, on a server with one-second timeouts (they also close
    // idle keep-alive connections after a second, which a pooling client would trip on).
    let quick = Api::start_with(
        &tmp.path().join("quick"),
        &[
            "--header-read-timeout-secs",
            "1",
            "--body-idle-timeout-secs",
            "1",
        ],
    );
    // A request head that never ends is cut off; one too large is refused.
    let address = quick.base.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /v1/models HTTP/1.1\r\nHost: so1s\r\nX-Slow: ")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the connection stayed open past the head timeout"
    );
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let huge_header = quick
        .client
        .get(format!("{}/v1/models", quick.base))
        .header("x-pad", "a".repeat(100 << 10))
        .send()
        .await
        .unwrap();
    assert_eq!(huge_header.status(), 431);

    // An upload that stops sending is dropped with the reason, and nothing is stored.
    let mut stalled = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/models/stalled/versions HTTP/1.1\r\nHost: so1s\r\n\
         Authorization: Bearer {}\r\nContent-Length: 100000\r\n\r\nPK\x03\x04",
        quick.admin_token
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut answer))
        .await
        .expect("the server answers a stalled upload");
    let answer = String::from_utf8_lossy(&answer[..read.unwrap()]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("stalled"), "{answer}");
    let model = quick
        .client
        .get(format!("{}/v1/models/stalled", quick.base));
    assert_eq!(status(model).await, 404);
    quick.stop();

    let api = Api::start_with(&data, &["--build-memory-mib", "300"]);
    let pid = api.child.id();

    // The smoke test runs in a child process under --build-memory-mib: a real model that
    // needs more fails its build, and the api server does not grow.
    let grown = growth(pid, async {
        api.upload("limited", minilm_archive()).await;
        let record = api.settle("limited", "v1").await;
        assert_eq!(record["state"], "failed", "{record}");
        let error = record["error"].as_str().unwrap();
        assert!(error.contains("300 MiB"), "{error}");
        eprintln!("over the build memory limit: {error}");
    })
    .await;
    eprintln!(
        "a model over the build's memory limit: +{} MiB",
        grown / MIB
    );
    assert!(grown < 150 * MIB, "grew {} MiB", grown / MIB);

    let grown = growth(pid, async {
        // A client of its own: the server cuts this connection short, and a pooled client
        // must not hand it to the next request.
        let answer = client_with_token(&api.admin_token)
            .post(format!("{}/v1/models/m/versions", api.base))
            .header("content-type", "multipart/form-data; boundary=B")
            .body(endless_headers(300 * MIB))
            .send()
            .await;
        // The server answers and closes before the client is done sending: either the
        // 4xx arrives or the connection is cut.
        if let Ok(answer) = answer {
            assert!(answer.status().is_client_error(), "{answer:?}");
            let body: Value = answer.json().await.unwrap();
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("before its `model` part"),
                "{body}"
            );
        }
    })
    .await;
    eprintln!("endless multipart headers: +{} MiB", grown / MIB);
    assert!(grown < 150 * MIB, "grew {} MiB", grown / MIB);
    let model = api.client.get(format!("{}/v1/models/m", api.base));
    assert_eq!(status(model).await, 404, "nothing stored");

    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "long-name",
            long_name_bomb(512 * MIB),
            "long name is 536870912 bytes",
        ),
        (
            "zip-link",
            zip_link_bomb(512 << 20),
            "link target is 536870912 bytes",
        ),
        ("zeros", zeros_bomb(8 << 30), "times its size"),
        ("many-files", many_files(100_000), "more than 10000 entries"),
    ];
    for (name, archive, expected) in cases {
        let size = archive.len();
        let grown = growth(pid, async {
            let accepted = api.upload(name, archive).await;
            assert_eq!(accepted["version"], "v1");
            let record = api.settle(name, "v1").await;
            assert_eq!(record["state"], "failed", "{record}");
            let error = record["error"].as_str().unwrap();
            assert!(error.contains(expected), "{name}: {error}");
            assert!(
                !error.contains(data.to_str().unwrap()),
                "a host path in {error}"
            );
        })
        .await;
        eprintln!("{name} ({size} bytes uploaded): +{} MiB", grown / MIB);
        assert!(grown < 150 * MIB, "{name}: grew {} MiB", grown / MIB);
        // The failed build left no unpacked files behind.
        let leftovers = std::fs::read_dir(data.join("bundles").join(name))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(leftovers, 0, "{name}: unpacked files left behind");
    }
    api.stop();
}

/// MiniLM with a config.json that claims `layers` layers.
fn minilm_claiming_layers(layers: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let source = minilm_dir();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        let target = dir.path().join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir(&target).unwrap();
            for inner in std::fs::read_dir(entry.path()).unwrap() {
                let inner = inner.unwrap();
                std::fs::copy(inner.path(), target.join(inner.file_name())).unwrap();
            }
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
    let config_path = dir.path().join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["num_hidden_layers"] = json!(layers);
    std::fs::write(&config_path, config.to_string()).unwrap();
    so1s_core::build::pack_dir(dir.path()).unwrap()
}

/// The pids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("children");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        found.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    found
}

/// Milliseconds of the first event of `events` (SSE text) whose message contains `text`.
fn event_at(events: &str, text: &str) -> Option<u64> {
    events
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|e| e["message"].as_str().is_some_and(|m| m.contains(text)))
        .and_then(|e| e["at_ms"].as_u64())
}

/// Waits until a version's pipeline ended (live, failed, already replaced: retired, or
/// overtaken by a newer version: superseded).
async fn settled(api: &Api, model: &str, version: &str) -> Value {
    let started = Instant::now();
    loop {
        let record = api.version(model, version).await;
        if matches!(
            record["state"].as_str(),
            Some("live" | "failed" | "retired" | "superseded")
        ) {
            return record;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "{record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn builds_queue_lying_configs_fail_early_and_a_stalled_upstream_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start_with(
        &tmp.path().join("data"),
        &[
            "--max-concurrent-builds",
            "1",
            "--gateway-timeout-secs",
            "2",
        ],
    );
    let pid = api.child.id();
    let accepted = api.upload("minilm", minilm_archive()).await;
    assert_eq!(accepted["version"], "v1");
    assert_eq!(api.settle("minilm", "v1").await["state"], "live");

    // A predict server that stops answering: the client gets 504 within the timeout.
    let predict_server = children(pid)[0];
    signal(predict_server, "STOP");
    let started = Instant::now();
    let stalled = api
        .predict("/inference/minilm/predict", "Hello world")
        .await
        .unwrap();
    let waited = started.elapsed();
    // A client's own deadline (so1s-timeout-ms) is honoured.
    let short = api
        .client
        .post(format!("{}/inference/minilm/predict", api.base))
        .header("so1s-timeout-ms", "400")
        .json(&json!({"text": "in a hurry"}))
        .send()
        .await
        .unwrap();
    signal(predict_server, "CONT");
    assert_eq!(stalled.status(), 504);
    let body: Value = stalled.json().await.unwrap();
    assert_eq!(body["error_type"], "gateway_timeout");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(short.status(), 504);
    let error = short.json::<Value>().await.unwrap()["error"].to_string();
    let ms: u64 = error
        .split("within ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("{error}"));
    assert!((300..=400).contains(&ms), "{error}");
    api.predict_json("/inference/minilm/predict", "Hello world")
        .await;

    // 5000 layers: refused before anything loads.
    let lying = minilm_claiming_layers(5000);
    let grown = growth(pid, async {
        api.upload("minilm", lying).await;
        let record = api.settle("minilm", "v2").await;
        assert_eq!(record["state"], "failed");
        let error = record["error"].as_str().unwrap();
        assert!(error.contains("does not match the weights"), "{error}");
        eprintln!("a config with 5000 layers: {error}");
    })
    .await;
    eprintln!("a config with 5000 layers: +{} MiB", grown / MIB);
    assert!(grown < 150 * MIB, "grew {} MiB", grown / MIB);

    // 16 uploads at once: 4 good, 12 broken. One build at a time; each ends as it should.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let (good, broken) = (minilm_archive(), broken_model_archive());
    let api_ref = &api;
    let uploads = (0..16).map(|i| {
        let archive = if i % 4 == 0 {
            good.clone()
        } else {
            broken.clone()
        };
        let model = if i % 4 == 0 { "many" } else { "broken" };
        async move { (model, i % 4 == 0, api_ref.upload(model, archive).await) }
    });
    let accepted = futures::future::join_all(uploads).await;
    let mut intervals = Vec::new();
    for (model, good, record) in accepted {
        let version = record["version"].as_str().unwrap().to_owned();
        let settled = settled(&api, model, &version).await;
        let state = settled["state"].as_str().unwrap();
        if good {
            assert!(
                matches!(state, "live" | "retired" | "superseded"),
                "{model} {version}: {settled}"
            );
        } else {
            assert_eq!(state, "failed", "{model} {version}: {settled}");
        }
        let events = api.events(model, &version).await;
        let start = event_at(&events, "building ").unwrap();
        let end = event_at(&events, "built ")
            .or_else(|| event_at(&events, "build failed"))
            .unwrap();
        intervals.push((start, end));
    }
    intervals.sort();
    for pair in intervals.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two builds overlapped: {pair:?}");
    }
    // Whatever order the builds ended in, the newest good upload is the one serving.
    assert_eq!(api.model("many").await["live_version"], "v4");
    let peak = memory(pid, "VmHWM:");
    eprintln!("16 parallel uploads: api server peak {} MiB", peak / MIB);
    // Builds load models in child processes: the api server itself stays small.
    assert!(peak < 512 * MIB, "api server peak {} MiB", peak / MIB);
    api.stop();
}

#[tokio::test]
async fn past_the_store_quota_an_upload_gets_507_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let archive = minilm_archive();
    // Room for one MiniLM archive and 1 KiB.
    let quota = (archive.len() + 1024).to_string();
    let api = Api::start_with(&data, &["--store-quota-bytes", &quota]);
    api.upload("minilm", archive).await;
    assert_eq!(api.settle("minilm", "v1").await["state"], "live");
    // 8 KiB that do not compress (small enough to be sent whole before the answer).
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..8192)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let refused = api
        .client
        .post(format!("{}/v1/models/minilm/versions", api.base))
        .header("content-type", "application/gzip")
        .body(tar_with_entry("noise.bin", &noise))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 507);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error_type"], "insufficient_storage", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("disk quota"),
        "{body}"
    );
    // Nothing stored: no v2, no partial upload; v1 serves on.
    let missing = api
        .client
        .get(format!("{}/v1/models/minilm/versions/v2", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let incoming = std::fs::read_dir(data.join("store/incoming"))
        .unwrap()
        .count();
    assert_eq!(incoming, 0);
    let answer = api
        .predict("/inference/minilm/predict", "still here?")
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    api.stop();
}
