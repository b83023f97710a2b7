//! Load a model with `TransformerService` and compare sentences by their embeddings.
//!
//! ```sh
//! cargo run --release -p so1s-examples --example service_embed -- [MODEL_DIR]
//! ```

use so1s_core::{ModelLayout, Prediction};
use so1s_inference::ServiceOptions;
use so1s_inference::TransformerService;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| ".cache/models/all-MiniLM-L6-v2".into());
    let layout = ModelLayout::inspect(dir.as_ref())?;
    println!(
        "{dir}: {} model ({})",
        layout.task,
        layout.architecture.as_str()
    );
    let service = TransformerService::load(layout, ServiceOptions::default()).await?;

    let texts = [
        "A new model version goes live in seconds.",
        "Deploying a fresh model release takes moments.",
        "The cat sleeps on the warm windowsill.",
    ];
    // Three concurrent callers: the service batches them into one forward pass.
    let answers = predict_concurrently(&service, &texts).await?;
    let vectors: Vec<Vec<f32>> = answers
        .into_iter()
        .map(|p| match p {
            Prediction::Embedding(v) => Ok(v),
            other => anyhow::bail!("not an embedding model: {other:?}"),
        })
        .collect::<anyhow::Result<_>>()?;
    for (i, text) in texts.iter().enumerate().skip(1) {
        let similarity: f32 = vectors[0].iter().zip(&vectors[i]).map(|(a, b)| a * b).sum();
        println!("cos({:?}, {:?}) = {similarity:.3}", texts[0], text);
    }
    Ok(())
}

async fn predict_concurrently(
    service: &TransformerService,
    texts: &[&str],
) -> anyhow::Result<Vec<Prediction>> {
    let tasks: Vec<_> = texts
        .iter()
        .map(|text| {
            let service = service.clone();
            let text = text.to_string();
            tokio::spawn(async move { service.predict_one(text).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await??);
    }
    Ok(answers)
}
