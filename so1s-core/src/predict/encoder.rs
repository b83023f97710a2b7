//! [`BertEncoder`]: so1s's own forward pass of BERT sentence-embedding models, for speed.
//!
//! rust-bert runs every model so1s serves; for the most served kind (BERT encoders with mean
//! pooling, like all-MiniLM-L6-v2) so1s can also run the forward pass itself on the same
//! weights, which allows two things rust-bert's models do not:
//!
//! - **int8 linear layers** ([`Precision::Int8`]): the weights of every linear layer are
//!   quantized once at load (per output row), the activations at each pass (per tensor), and
//!   fbgemm multiplies in integers — dynamic quantization, as ONNX Runtime and PyTorch do it
//!   for CPU serving. Embeddings stay close to the fp32 ones, not equal (see the tests).
//! - **grouping by length** ([`plan_passes`]): a batch's texts are sorted by token count and
//!   cut into passes so that short texts are not padded to the longest one.
//!
//! In fp32 ([`Precision::F32`]) the results equal rust-bert's to float rounding.

use crate::{Error, Result};
use std::ops::Range;
use std::path::Path;
use tch::{Kind, Scalar, Tensor};

pub use super::Precision;

/// A linear layer `x W^T + b`.
enum Linear {
    F32 { weight: Tensor, bias: Tensor },
    Int8(Int8Linear),
}

impl Linear {
    fn new(weight: Tensor, bias: Tensor, precision: Precision) -> Self {
        match precision {
            Precision::F32 => Linear::F32 { weight, bias },
            Precision::Int8 => Linear::Int8(Int8Linear::new(&weight, &bias)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Linear::F32 { weight, bias } => x.linear(weight, Some(bias)),
            Linear::Int8(linear) => linear.forward(x),
        }
    }
}

/// A linear layer whose weights are int8, one scale per output row (symmetric, 7 bits:
/// fbgemm's AVX2 kernel adds pairs of uint8 × int8 products in 16 bits, which full-range
/// weights could overflow). fbgemm quantizes the activations per pass (uint8, per tensor)
/// and multiplies in integers; the rows' scales are applied to its output.
struct Int8Linear {
    /// `[out, in]` int8, kept alive for `packed`.
    weight: Tensor,
    /// fbgemm's packed form of `weight`.
    packed: Tensor,
    /// Per output row: the sum of its quantized weights (zero point 0).
    col_offsets: Tensor,
    /// Per output row: its scale.
    scales: Tensor,
    /// `bias / scales`: added before the rows are scaled, so one multiplication does both.
    scaled_bias: Tensor,
}

/// The largest quantized weight magnitude (7 bits).
const WEIGHT_LEVELS: f64 = 63.0;

impl Int8Linear {
    fn new(weight: &Tensor, bias: &Tensor) -> Self {
        let weight = weight.to_kind(Kind::Float).contiguous();
        let scales = (weight.abs().amax([1], false) / WEIGHT_LEVELS).clamp_min(1e-12);
        let values = (&weight / scales.unsqueeze(1))
            .round()
            .clamp(-WEIGHT_LEVELS, WEIGHT_LEVELS)
            .to_kind(Kind::Int8)
            .contiguous();
        let col_offsets = values
            .to_kind(Kind::Int)
            .sum_dim_intlist(1, false, Kind::Int)
            .contiguous();
        let packed = values.fbgemm_pack_quantized_matrix();
        Self {
            scaled_bias: bias.to_kind(Kind::Float) / &scales,
            weight: values,
            packed,
            col_offsets,
            scales,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.fbgemm_linear_int8_weight_fp32_activation(
            &self.weight,
            &self.packed,
            &self.col_offsets,
            Scalar::float(1.0),
            Scalar::int(0),
            &self.scaled_bias,
        ) * &self.scales
    }
}

/// Layer normalization over the last dimension.
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        let hidden = *x.size().last().unwrap_or(&0);
        x.layer_norm(
            [hidden],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            false,
        )
    }
}

/// One transformer layer.
struct Layer {
    /// Query, key and value projections fused into one `[3 * hidden, hidden]` layer.
    qkv: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The shape of a BERT encoder, from its `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct BertShape {
    /// Width of the hidden states.
    pub hidden_size: i64,
    /// Attention heads per layer.
    pub num_attention_heads: i64,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// The feed-forward activation; so1s runs `gelu` (exact).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Only `absolute` position embeddings are supported.
    #[serde(default = "default_position")]
    pub position_embedding_type: String,
}

fn default_eps() -> f64 {
    1e-12
}

fn default_act() -> String {
    "gelu".into()
}

fn default_position() -> String {
    "absolute".into()
}

/// A BERT encoder whose forward pass so1s runs.
pub struct BertEncoder {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embedding: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: i64,
    precision: Precision,
}

impl BertEncoder {
    /// Loads the weights (`model.safetensors` or `rust_model.ot`, names with or without a
    /// `bert.` prefix) of a BERT encoder shaped as `shape`.
    pub fn load(weights: &Path, shape: &BertShape, precision: Precision) -> Result<Self> {
        if shape.hidden_act != "gelu" || shape.position_embedding_type != "absolute" {
            return Err(Error::InvalidModel(format!(
                "so1s's own BERT forward pass runs gelu and absolute positions, not {} and {}",
                shape.hidden_act, shape.position_embedding_type
            )));
        }
        if shape.num_attention_heads <= 0 || shape.hidden_size % shape.num_attention_heads != 0 {
            return Err(Error::InvalidModel(format!(
                "hidden size {} is not a multiple of {} attention heads",
                shape.hidden_size, shape.num_attention_heads
            )));
        }
        let loaded = match weights.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => Tensor::read_safetensors(weights),
            _ => Tensor::load_multi(weights),
        }
        .map_err(|e| Error::Load(format!("reading {}: {e}", weights.display())))?;
        let mut tensors: std::collections::HashMap<String, Tensor> = loaded
            .into_iter()
            .map(|(name, tensor)| {
                let name = name.strip_prefix("bert.").unwrap_or(&name).to_owned();
                (name, tensor.to_kind(Kind::Float))
            })
            .collect();
        let mut take = |name: &str| {
            tensors
                .remove(name)
                .ok_or_else(|| Error::InvalidModel(format!("the weights have no {name}")))
        };
        let norm = |take: &mut dyn FnMut(&str) -> Result<Tensor>, prefix: &str| {
            Ok::<_, Error>(LayerNorm {
                weight: take(&format!("{prefix}.weight"))?,
                bias: take(&format!("{prefix}.bias"))?,
                eps: shape.layer_norm_eps,
            })
        };
        let linear = |take: &mut dyn FnMut(&str) -> Result<Tensor>, prefix: &str| {
            Ok::<_, Error>(Linear::new(
                take(&format!("{prefix}.weight"))?,
                take(&format!("{prefix}.bias"))?,
                precision,
            ))
        };
        let word_embeddings = take("embeddings.word_embeddings.weight")?;
        let position_embeddings = take("embeddings.position_embeddings.weight")?;
        let token_type_embedding = take("embeddings.token_type_embeddings.weight")?.get(0);
        let embeddings_norm = norm(&mut take, "embeddings.LayerNorm")?;
        let mut layers = Vec::with_capacity(shape.num_hidden_layers);
        for i in 0..shape.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let mut part = |name: &str| take(&format!("{p}.attention.self.{name}"));
            let qkv_weight = Tensor::cat(
                &[
                    part("query.weight")?,
                    part("key.weight")?,
                    part("value.weight")?,
                ],
                0,
            );
            let qkv_bias = Tensor::cat(
                &[part("query.bias")?, part("key.bias")?, part("value.bias")?],
                0,
            );
            layers.push(Layer {
                qkv: Linear::new(qkv_weight, qkv_bias, precision),
                attention_output: linear(&mut take, &format!("{p}.attention.output.dense"))?,
                attention_norm: norm(&mut take, &format!("{p}.attention.output.LayerNorm"))?,
                intermediate: linear(&mut take, &format!("{p}.intermediate.dense"))?,
                output: linear(&mut take, &format!("{p}.output.dense"))?,
                output_norm: norm(&mut take, &format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(Self {
            word_embeddings,
            position_embeddings,
            token_type_embedding,
            embeddings_norm,
            layers,
            heads: shape.num_attention_heads,
            precision,
        })
    }

    /// The precision the linear layers run in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The width of the hidden states (and of a mean-pooled embedding).
    pub fn hidden_size(&self) -> usize {
        self.word_embeddings.size().get(1).copied().unwrap_or(0) as usize
    }

    /// The last hidden states `[batch, tokens, hidden]` of token ids `[batch, tokens]`
    /// (int64) with attention mask `[batch, tokens]` (1 for tokens, 0 for padding).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let (batch, tokens) = ids.size2().unwrap_or((0, 0));
            let positions = self.position_embeddings.narrow(0, 0, tokens);
            let embedded = self
                .word_embeddings
                .index_select(0, &ids.flatten(0, -1))
                .view([batch, tokens, -1])
                + positions.unsqueeze(0)
                + &self.token_type_embedding;
            let mut hidden = self.embeddings_norm.forward(&embedded);
            // Padding never attended to: -inf where the mask is 0, broadcast over heads and
            // queries.
            let attend = mask.to_kind(Kind::Bool).view([batch, 1, 1, tokens]);
            for layer in &self.layers {
                hidden = self.layer_forward(layer, &hidden, &attend);
            }
            hidden
        })
    }

    fn layer_forward(&self, layer: &Layer, hidden: &Tensor, attend: &Tensor) -> Tensor {
        let (batch, tokens, width) = hidden.size3().unwrap_or((0, 0, 0));
        let head_width = width / self.heads;
        let qkv = layer
            .qkv
            .forward(hidden)
            .view([batch, tokens, 3, self.heads, head_width])
            .permute([2, 0, 3, 1, 4]);
        let context = Tensor::scaled_dot_product_attention(
            &qkv.get(0),
            &qkv.get(1),
            &qkv.get(2),
            Some(attend),
            0.0,
            false,
            None,
        )
        .transpose(1, 2)
        .reshape([batch, tokens, width]);
        let attended = layer
            .attention_norm
            .forward(&(layer.attention_output.forward(&context) + hidden));
        let intermediate = layer.intermediate.forward(&attended).gelu("none");
        layer
            .output_norm
            .forward(&(layer.output.forward(&intermediate) + attended))
    }
}

/// Mean of the token states `[batch, tokens, hidden]` over the tokens the mask keeps.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Tensor {
    let mask = mask.to_kind(Kind::Float).unsqueeze(-1);
    let summed = (hidden * &mask).sum_dim_intlist(1, false, Kind::Float);
    let counts = mask.sum_dim_intlist(1, false, Kind::Float).clamp_min(1e-9);
    summed / counts
}

/// Rows scaled to unit L2 norm.
pub fn normalize(rows: &Tensor) -> Tensor {
    let norms = rows.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    rows / norms
}

/// Cuts texts sorted by token count (`lengths`, ascending) into consecutive passes, so that
/// the tokens computed (each pass pads to its longest text) plus `pass_cost` tokens per pass
/// (the fixed cost of one more forward pass) are fewest.
pub fn plan_passes(lengths: &[usize], pass_cost: usize) -> Vec<Range<usize>> {
    let n = lengths.len();
    if n == 0 {
        return Vec::new();
    }
    // best[i]: the least cost of the first i texts; cut[i]: where their last pass starts.
    let mut best = vec![usize::MAX; n + 1];
    let mut cut = vec![0; n + 1];
    best[0] = 0;
    for end in 1..=n {
        for start in 0..end {
            let cost = best[start] + (end - start) * lengths[end - 1] + pass_cost;
            if cost < best[end] {
                best[end] = cost;
                cut[end] = start;
            }
        }
    }
    let mut passes = Vec::new();
    let mut end = n;
    while end > 0 {
        passes.push(cut[end]..end);
        end = cut[end];
    }
    passes.reverse();
    passes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_lengths_make_one_pass() {
        assert_eq!(plan_passes(&[12; 32], 64), vec![(0..32)]);
        assert!(plan_passes(&[], 64).is_empty());
    }

    #[test]
    fn a_long_tail_gets_its_own_pass() {
        // 30 texts of 10 tokens and 2 of 200: one pass would compute 32 * 200 tokens.
        let mut lengths = vec![10; 30];
        lengths.extend([200, 200]);
        assert_eq!(plan_passes(&lengths, 64), [0..30, 30..32]);
    }

    #[test]
    fn a_cut_must_pay_for_its_pass() {
        // Splitting [4, 4 | 16 x 4] saves 2 * 12 = 24 padded tokens: less than a pass costs.
        assert_eq!(plan_passes(&[4, 4, 16, 16, 16, 16], 64), vec![(0..6)]);
        assert_eq!(plan_passes(&[4, 4, 16, 16, 16, 16], 8), [0..2, 2..6]);
    }

    #[test]
    fn precisions_parse_and_print() {
        assert_eq!("int8".parse::<Precision>().unwrap(), Precision::Int8);
        assert_eq!("f32".parse::<Precision>().unwrap(), Precision::F32);
        assert!("fp8".parse::<Precision>().is_err());
        assert_eq!(Precision::Int8.as_str(), "int8");
    }

    #[test]
    fn int8_linear_stays_close_to_f32() {
        tch::manual_seed(7);
        let weight = Tensor::randn([96, 64], (Kind::Float, tch::Device::Cpu)) * 0.05;
        let bias = Tensor::randn([96], (Kind::Float, tch::Device::Cpu)) * 0.1;
        let x = Tensor::randn([5, 7, 64], (Kind::Float, tch::Device::Cpu));
        let exact =
            Linear::new(weight.shallow_clone(), bias.shallow_clone(), Precision::F32).forward(&x);
        let int8 = Linear::new(weight, bias, Precision::Int8).forward(&x);
        assert_eq!(int8.size(), [5, 7, 96]);
        let error = (&int8 - &exact).abs().max().double_value(&[]);
        let scale = exact.abs().max().double_value(&[]);
        assert!(error < 0.05 * scale, "error {error} vs scale {scale}");
        assert!(error > 0.0, "int8 is not exact: it really ran quantized");
    }

    #[test]
    fn pooling_ignores_padding_and_normalizes() {
        let hidden = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 100.0, 100.0]).view([1, 3, 2]);
        let mask = Tensor::from_slice(&[1i64, 1, 0]).view([1, 3]);
        let pooled = mean_pool(&hidden, &mask);
        assert_eq!(Vec::<f32>::try_from(pooled.view([-1])).unwrap(), [2.0, 3.0]);
        let unit = normalize(&Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2]));
        assert_eq!(Vec::<f32>::try_from(unit.view([-1])).unwrap(), [0.6, 0.8]);
    }
}
