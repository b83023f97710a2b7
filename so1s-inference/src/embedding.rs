//! A sentence-transformers model's modules after the transformer: [`Pooling`] of the token
//! states into one vector (`1_Pooling/config.json`'s modes, concatenated in
//! sentence-transformers' order), an optional [`Dense`] projection, then unit length when
//! the model lists a Normalize module.

use crate::encoder::{normalize, Activation, Weights};
use serde::Deserialize;
use so1s_core::model::{read_json, ModelLayout};
use so1s_core::{Error, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// One way of pooling token states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    /// The first token's state (`[CLS]`, BGE's).
    Cls,
    /// The largest value of each channel over the tokens.
    Max,
    /// The mean of the tokens' states (MiniLM's, E5's).
    Mean,
    /// Their sum over the square root of the token count.
    MeanSqrtLen,
    /// Their mean weighted by position (1 for the first token, 2 for the second, …).
    WeightedMean,
    /// The last token's state (decoder-style embedders).
    LastToken,
}

/// The pooling of `1_Pooling/config.json`: its modes, each a vector, concatenated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pooling {
    modes: Vec<PoolingMode>,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

impl Pooling {
    /// Mean pooling: what a plain encoder is pooled with.
    pub fn mean() -> Self {
        Self {
            modes: vec![PoolingMode::Mean],
        }
    }

    /// The pooling a sentence-transformers `Pooling` config names, in its order; an error
    /// when it names none.
    pub fn read(path: &Path) -> Result<Self> {
        let config: PoolingConfig = read_json(path)?;
        let modes: Vec<PoolingMode> = [
            (config.pooling_mode_cls_token, PoolingMode::Cls),
            (config.pooling_mode_max_tokens, PoolingMode::Max),
            (config.pooling_mode_mean_tokens, PoolingMode::Mean),
            (
                config.pooling_mode_mean_sqrt_len_tokens,
                PoolingMode::MeanSqrtLen,
            ),
            (
                config.pooling_mode_weightedmean_tokens,
                PoolingMode::WeightedMean,
            ),
            (config.pooling_mode_lasttoken, PoolingMode::LastToken),
        ]
        .into_iter()
        .filter_map(|(on, mode)| on.then_some(mode))
        .collect();
        if modes.is_empty() {
            return Err(Error::InvalidModel(format!(
                "{} turns on no pooling mode",
                path.display()
            )));
        }
        Ok(Self { modes })
    }

    /// The modes, in order.
    pub fn modes(&self) -> &[PoolingMode] {
        &self.modes
    }

    /// The pooled vectors `[batch, modes · hidden]` of token states `[batch, tokens,
    /// hidden]` (f32) under `mask` `[batch, tokens]` (right padding).
    pub fn pool(&self, hidden: &Tensor, mask: &Tensor) -> Tensor {
        let hidden = hidden.to_kind(Kind::Float);
        let keep = mask.to_kind(Kind::Float).unsqueeze(-1);
        let counts = keep.sum_dim_intlist(1, false, Kind::Float).clamp_min(1e-9);
        let summed = || (&hidden * &keep).sum_dim_intlist(1, false, Kind::Float);
        let vectors: Vec<Tensor> = self
            .modes
            .iter()
            .map(|mode| match mode {
                PoolingMode::Cls => hidden.select(1, 0),
                PoolingMode::Max => hidden
                    .masked_fill(&keep.eq(0.0).expand_as(&hidden), -1e9)
                    .amax([1], false),
                PoolingMode::Mean => summed() / &counts,
                PoolingMode::MeanSqrtLen => summed() / counts.sqrt(),
                PoolingMode::WeightedMean => {
                    let tokens = hidden.size()[1];
                    let weights =
                        Tensor::arange_start(1, tokens + 1, (Kind::Float, hidden.device()))
                            .view([1, -1, 1]);
                    let weighted = &keep * weights;
                    (&hidden * &weighted).sum_dim_intlist(1, false, Kind::Float)
                        / weighted
                            .sum_dim_intlist(1, false, Kind::Float)
                            .clamp_min(1e-9)
                }
                PoolingMode::LastToken => {
                    let last = (mask.sum_dim_intlist(1, false, Kind::Int64) - 1).clamp_min(0);
                    let width = hidden.size()[2];
                    let index = last.view([-1, 1, 1]).expand([-1, 1, width], false);
                    (&hidden * &keep).gather(1, &index, false).squeeze_dim(1)
                }
            })
            .collect();
        match vectors.len() {
            1 => vectors.into_iter().next().unwrap_or_default(),
            _ => Tensor::cat(&vectors, 1),
        }
    }
}

/// A sentence-transformers `Dense` module: a linear layer and its activation.
pub struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
    activation: Option<Activation>,
}

#[derive(Deserialize)]
struct DenseConfig {
    in_features: i64,
    out_features: i64,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default = "tanh")]
    activation_function: String,
}

fn yes() -> bool {
    true
}

fn tanh() -> String {
    "torch.nn.modules.activation.Tanh".into()
}

impl Dense {
    /// The module of `config` (its `config.json`) and `weights`.
    pub fn load(config: &Path, weights: &Path) -> Result<Self> {
        let config: DenseConfig = read_json(config)?;
        let activation = match config.activation_function.rsplit('.').next() {
            Some("Identity") => None,
            Some("Tanh") => Some(Activation::Tanh),
            Some("ReLU") => Some(Activation::Relu),
            Some("GELU") => Some(Activation::Gelu),
            Some("SiLU") => Some(Activation::Silu),
            _ => {
                return Err(Error::InvalidModel(format!(
                    "the Dense module's activation {} is not one so1s runs (Identity, Tanh, \
                     ReLU, GELU, SiLU)",
                    config.activation_function
                )))
            }
        };
        let mut tensors = Weights::read(weights, "")?;
        let shape = [config.out_features, config.in_features];
        let weight = tensors.take_shaped("linear.weight", &shape)?;
        let bias = match config.bias {
            true => Some(tensors.take_shaped("linear.bias", &shape[..1])?),
            false => None,
        };
        Ok(Self {
            weight,
            bias,
            activation,
        })
    }

    /// Its output width.
    pub fn outputs(&self) -> usize {
        self.weight.size()[0] as usize
    }

    /// The projection of pooled vectors `[batch, in]`.
    pub fn forward(&self, pooled: &Tensor) -> Tensor {
        let out = pooled.linear(&self.weight, self.bias.as_ref());
        match self.activation {
            Some(activation) => activation.apply(&out),
            None => out,
        }
    }
}

/// What follows the transformer in an embeddings model.
pub struct Modules {
    /// Its pooling.
    pub pooling: Pooling,
    /// Its projection.
    pub dense: Option<Dense>,
    /// Whether vectors come out at unit length.
    pub normalize: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
}

impl Modules {
    /// The pooling and Normalize of a sentence-transformers model (`modules.json`); a plain
    /// encoder's (no `modules.json`) is mean pooling, not normalized. The Dense module's
    /// weights are read by [`Modules::load_dense`].
    pub fn plan(layout: &ModelLayout) -> Result<(Pooling, bool)> {
        let Some(files) = &layout.sentence_transformer else {
            return Ok((Pooling::mean(), false));
        };
        let modules: Vec<ModuleEntry> = read_json(&files.modules)?;
        let normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
        Ok((Pooling::read(&files.pooling_config)?, normalize))
    }

    /// The whole of it, the Dense module's weights read.
    pub fn load(layout: &ModelLayout) -> Result<Self> {
        let (pooling, normalize) = Self::plan(layout)?;
        let dense = match layout
            .sentence_transformer
            .as_ref()
            .and_then(|f| f.dense.as_ref())
        {
            Some((config, weights)) => Some(Dense::load(config, weights)?),
            None => None,
        };
        Ok(Self {
            pooling,
            dense,
            normalize,
        })
    }

    /// The width of an embedding out of hidden states `hidden` wide.
    pub fn width(&self, hidden: usize) -> usize {
        match &self.dense {
            Some(dense) => dense.outputs(),
            None => hidden * self.pooling.modes().len(),
        }
    }

    /// The embeddings `[batch, width]` of token states `[batch, tokens, hidden]`.
    pub fn embed(&self, hidden: &Tensor, mask: &Tensor) -> Tensor {
        let pooled = self.pooling.pool(hidden, mask);
        let projected = match &self.dense {
            Some(dense) => dense.forward(&pooled),
            None => pooled,
        };
        match self.normalize {
            true => normalize(&projected),
            false => projected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states() -> (Tensor, Tensor) {
        // Two texts: three tokens and two (one padding cell).
        let hidden = Tensor::from_slice(&[
            1.0f32, 10.0, 2.0, 20.0, 3.0, 30.0, //
            4.0, 40.0, 6.0, 60.0, 99.0, 99.0,
        ])
        .view([2, 3, 2]);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 0]).view([2, 3]);
        (hidden, mask)
    }

    fn pooled(modes: Vec<PoolingMode>) -> Vec<Vec<f32>> {
        let (hidden, mask) = states();
        Vec::try_from(Pooling { modes }.pool(&hidden, &mask)).unwrap()
    }

    #[test]
    fn each_mode_pools_the_real_tokens_only() {
        assert_eq!(pooled(vec![PoolingMode::Cls]), [[1.0, 10.0], [4.0, 40.0]]);
        assert_eq!(pooled(vec![PoolingMode::Max]), [[3.0, 30.0], [6.0, 60.0]]);
        assert_eq!(pooled(vec![PoolingMode::Mean]), [[2.0, 20.0], [5.0, 50.0]]);
        assert_eq!(
            pooled(vec![PoolingMode::LastToken]),
            [[3.0, 30.0], [6.0, 60.0]]
        );
        let sqrt = pooled(vec![PoolingMode::MeanSqrtLen]);
        assert!((sqrt[1][0] - 10.0 / 2f32.sqrt()).abs() < 1e-5, "{sqrt:?}");
        // (1·1 + 2·2 + 3·3) / 6 and (4·1 + 6·2) / 3.
        let weighted = pooled(vec![PoolingMode::WeightedMean]);
        assert!((weighted[0][0] - 14.0 / 6.0).abs() < 1e-5, "{weighted:?}");
        assert!((weighted[1][0] - 16.0 / 3.0).abs() < 1e-5, "{weighted:?}");
        assert_eq!(
            pooled(vec![PoolingMode::Cls, PoolingMode::Mean]),
            [[1.0, 10.0, 2.0, 20.0], [4.0, 40.0, 5.0, 50.0]]
        );
    }
}
