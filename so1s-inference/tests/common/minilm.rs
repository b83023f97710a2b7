//! The MiniLM model `scripts/setup.sh` installs and Python sentence-transformers' embeddings
//! of six texts (`tests/fixtures/minilm-reference.json`), with the vector arithmetic the
//! tests compare by. One file, included by path in so1s-inference's and so1s-bin's tests.

use std::path::{Path, PathBuf};

/// The MiniLM model directory `scripts/setup.sh` prepares (or `SO1S_MINILM_DIR`).
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("SO1S_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/all-MiniLM-L6-v2")
        });
    assert!(
        dir.join("model.safetensors").is_file(),
        "the MiniLM model is missing at {}: run scripts/setup.sh",
        dir.display()
    );
    dir
}

/// The six reference texts and sentence-transformers' embeddings of them, in order
/// (`Hello world` first).
pub fn reference() -> Vec<(String, Vec<f32>)> {
    let text = include_str!("../fixtures/minilm-reference.json");
    let json: serde_json::Value = serde_json::from_str(text).unwrap();
    json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let vector = item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            (item["text"].as_str().unwrap().to_owned(), vector)
        })
        .collect()
}

/// A vector's length.
pub fn norm<T: Copy + Into<f64>>(a: &[T]) -> f64 {
    a.iter().map(|x| (*x).into().powi(2)).sum::<f64>().sqrt()
}

/// The cosine of two vectors of the same length.
pub fn cosine<A: Copy + Into<f64>, B: Copy + Into<f64>>(a: &[A], b: &[B]) -> f64 {
    assert_eq!(a.len(), b.len(), "vectors of different lengths");
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x).into() * (*y).into())
        .sum();
    dot / (norm(a) * norm(b))
}
