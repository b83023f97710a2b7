//! Call a running so1s api server from Rust with [`so1s_core::client::ApiClient`]: upload a
//! model archive, follow its build and rollout until live, predict through the gateway.
//!
//! ```sh
//! target/release/so1s serve --port 8000 --data-dir so1s-data &
//! SO1S_TOKEN=$(cat so1s-data/admin.token) \
//!   cargo run --release -p so1s-examples --example api_client -- http://127.0.0.1:8000 [MODEL_DIR]
//! ```
//!
//! The token needs the deployer role (`so1s token create --role deployer`).

use so1s_core::auth::Token;
use so1s_core::client::ApiClient;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let server = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8000".into());
    let model_dir = args
        .next()
        .unwrap_or_else(|| ".cache/models/all-MiniLM-L6-v2".into());
    let token = std::env::var("SO1S_TOKEN").ok().map(Token::new);
    let client = ApiClient::new(server, token);

    let archive = so1s_core::build::archive::pack_dir(model_dir.as_ref())?;
    let accepted = client.upload("minilm", archive).await?;
    let version = accepted["version"].as_str().unwrap_or_default().to_owned();
    println!("accepted minilm {version}");

    client
        .follow_events("minilm", &version, |event| println!("  {}", event.message))
        .await?;
    let record = client.version("minilm", &version).await?;
    if record["state"] != "live" {
        anyhow::bail!("{version} is {}: {}", record["state"], record["error"]);
    }

    let answer = client.predict("minilm", "Hello world").await?;
    println!("embedding starts {}", answer["result"][0]);
    Ok(())
}
