//! [`Precision`]: the number type of so1s's own forward pass, as flags, `so1s.toml` and
//! metadata name it. Plain data, so manifests can be read without the `inference` feature.

/// The number type of the linear layers' multiplications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// 32-bit floats, as trained.
    #[default]
    F32,
    /// 8-bit integer weights and activations (dynamic quantization), fp32 elsewhere.
    Int8,
}

impl Precision {
    /// The name used in flags, manifests and metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "f32" | "fp32" => Ok(Precision::F32),
            "int8" => Ok(Precision::Int8),
            other => Err(format!("unknown precision {other:?}: use f32 or int8")),
        }
    }
}
