//! Run the predict server inside your own program, on a port of your choosing, and stop it
//! gracefully with Ctrl-C.
//!
//! ```sh
//! cargo run --release -p so1s-examples --example predict_server_embed -- [MODEL_DIR] [PORT]
//! curl -s localhost:8080/predict -d '{"text": "Hello world"}'
//! ```

use so1s_inference::server::{run, PredictServerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| ".cache/models/all-MiniLM-L6-v2".into());
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(8080);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("serving {dir} on http://{}", listener.local_addr()?);
    let mut config = PredictServerConfig::new(dir);
    config.model_version = "example".into();
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    run(listener, config, shutdown)
        .await
        .map_err(|e| anyhow::anyhow!(e.chain()))
}
