//! Call a running so1s api server from Rust: upload a model archive, wait until it is live,
//! predict through the gateway.
//!
//! ```sh
//! target/release/so1s serve --port 8000 &
//! cargo run --release -p so1s-examples --example api_client -- http://127.0.0.1:8000 [MODEL_DIR]
//! ```

use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8000".into());
    let model_dir = args
        .next()
        .unwrap_or_else(|| ".cache/models/all-MiniLM-L6-v2".into());
    let client = reqwest::Client::new();

    let archive = so1s_core::build::archive::pack_dir(model_dir.as_ref())?;
    let accepted: serde_json::Value = client
        .post(format!("{server}/v1/models/minilm/versions"))
        .body(archive)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let link = accepted["links"]["self"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    println!("accepted {} {}", accepted["model"], accepted["version"]);

    loop {
        let record: serde_json::Value = client
            .get(format!("{server}{link}"))
            .send()
            .await?
            .json()
            .await?;
        match record["state"].as_str() {
            Some("live") => break,
            Some("failed") => anyhow::bail!("failed: {}", record["error"]),
            state => println!("state: {}", state.unwrap_or("?")),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let answer: serde_json::Value = client
        .post(format!("{server}/inference/minilm/predict"))
        .json(&serde_json::json!({"text": "Hello world"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!("embedding starts {}", answer["result"][0]);
    Ok(())
}
