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

use futures::StreamExt;
use so1s_core::auth::Token;
use so1s_core::client::ApiClient;
use so1s_core::registry::VersionState;
use so1s_core::Prediction;

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

    let archive = so1s_core::build::pack_dir(model_dir.as_ref())?;
    let stored = client.upload("minilm", archive).await?;
    let version = stored.version().to_string();
    println!(
        "accepted minilm {version} ({} bytes)",
        stored.record.stored.size
    );

    // The events are a stream: the history first, then each new one until the version
    // settles.
    let mut events = client.events("minilm", &version).await?;
    while let Some(event) = events.next().await {
        println!("  {}", event?.message);
    }
    let settled = client.version("minilm", &version).await?;
    if settled.state() != VersionState::Live {
        anyhow::bail!(
            "{version} is {}: {}",
            settled.state().as_str(),
            settled.record.error.unwrap_or_default()
        );
    }

    match client.predict("minilm", "Hello world").await? {
        Prediction::Embedding(vector) => {
            println!("a {}-value embedding, starting {}", vector.len(), vector[0])
        }
        Prediction::Label { label, score, .. } => println!("{label} ({score:.3})"),
        Prediction::Entities(entities) => {
            for entity in entities {
                println!(
                    "{} `{}` ({:.3})",
                    entity.entity_group, entity.word, entity.score
                )
            }
        }
        Prediction::Relevance { score, .. } => println!("relevance {score:.3}"),
    }
    Ok(())
}
