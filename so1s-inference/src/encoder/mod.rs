//! [`Encoder`]: so1s's own forward pass of BERT-style encoders, for speed and for the models
//! rust-bert has no pipeline for. The model families it runs (BERT, ELECTRA) are one file
//! each in [`family`], behind [`Family`]: their names and quirks; this module is what they
//! share.
//!
//! rust-bert runs most models so1s serves; for BERT and ELECTRA encoders so1s can also run
//! the forward pass itself on the same weights, which allows what rust-bert's models do not:
//!
//! - **bf16 matrix products** ([`Precision::Bf16`], what `precision = auto` picks on CPUs
//!   with native bf16): weights converted once at load; the linear layers, the attention and
//!   GELU in bf16, while layer norms, residual sums and pooling stay in f32 —
//!   `torch.autocast`'s split. Embeddings at cosine ≥ 0.9999 to f32.
//! - **int8 linear layers** ([`Precision::Int8`]): weights quantized once at load (per
//!   output row, 8 bits with VNNI), activations at each pass (per token), fbgemm multiplying
//!   in integers — dynamic quantization, as ONNX Runtime and PyTorch do it for CPU serving —
//!   with SmoothQuant's per-channel smoothing calibrated at load, and the feed-forward output
//!   projections in bf16 (f32 without native bf16). Close to f32, not equal (see the tests).
//! - **packed tokens**: the hidden states hold one row per real token, so the linear layers,
//!   layer norms and GELU compute no padding; only the attention sees a padded grid.
//! - **grouping by length** ([`plan_passes`]): a batch's texts are sorted by token count and
//!   cut into passes where a long text would make the attention of many short ones pad to it.
//! - **ELECTRA** (`ElectraForSequenceClassification`, the seed's KoELECTRA sentiment model):
//!   its embeddings are narrower than its hidden states and projected up
//!   (`embeddings_project`), and its classification head ([`ClassifierHead`]) differs
//!   from BERT's.
//!
//! In fp32 ([`Precision::F32`]) the results equal rust-bert's and Hugging Face transformers'
//! to float rounding.

pub mod family;
mod head;
mod layers;
mod passes;
mod weights;

pub use family::Family;
pub use head::ClassifierHead;
pub use passes::{mean_pool, normalize, run_in_passes, PassCost};
pub use so1s_core::predict::{CpuFeatures, Precision};
pub use weights::Weights;

use layers::{LayerNorm, Linear, WEIGHT_LEVELS_AVX2, WEIGHT_LEVELS_VNNI};
use so1s_core::{Error, Result};
use tch::{Kind, Tensor};

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

/// The shape of a BERT-style encoder, from its `config.json`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct EncoderShape {
    /// Width of the hidden states.
    pub hidden_size: i64,
    /// Width of the token embeddings, when narrower than the hidden states (ELECTRA); they
    /// are projected up by `embeddings_project`.
    #[serde(default)]
    pub embedding_size: Option<i64>,
    /// Attention heads per layer.
    pub num_attention_heads: i64,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Positions the model has embeddings for: the longest input in tokens.
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
    /// Tokens in the vocabulary.
    #[serde(default)]
    pub vocab_size: Option<i64>,
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

impl EncoderShape {
    /// Whether so1s's own forward pass runs this shape: exact GELU, absolute positions, a
    /// hidden width its heads divide.
    pub fn check(&self) -> Result<()> {
        if self.hidden_act != "gelu" || self.position_embedding_type != "absolute" {
            return Err(Error::InvalidModel(format!(
                "so1s's own forward pass runs gelu and absolute positions, not {} and {}",
                self.hidden_act, self.position_embedding_type
            )));
        }
        if self.num_attention_heads <= 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::InvalidModel(format!(
                "hidden size {} is not a multiple of {} attention heads",
                self.hidden_size, self.num_attention_heads
            )));
        }
        Ok(())
    }

    /// Width of the token embeddings.
    pub fn embedding_width(&self) -> i64 {
        self.embedding_size.unwrap_or(self.hidden_size)
    }
}

/// A BERT-style encoder whose forward pass so1s runs.
pub struct Encoder {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embedding: Tensor,
    embeddings_norm: LayerNorm,
    /// ELECTRA's projection of narrow embeddings to the hidden width.
    embeddings_project: Option<Linear>,
    layers: Vec<Layer>,
    heads: i64,
    hidden: i64,
    precision: Precision,
}

/// The largest input magnitude each linear layer saw, per input channel, while calibrating.
#[derive(Default)]
struct Ranges {
    /// `embeddings_project`'s input.
    project: Option<Tensor>,
    /// Per layer: qkv, attention output, intermediate, output.
    layers: Vec<[Option<Tensor>; 4]>,
}

/// Records `x`'s largest magnitude per channel (its last dimension) into `slot`.
fn observe(slot: &mut Option<Tensor>, x: &Tensor) {
    let width = *x.size().last().unwrap_or(&0);
    let seen = x
        .to_kind(Kind::Float)
        .abs()
        .reshape([-1, width])
        .amax([0], false);
    *slot = Some(match slot.take() {
        Some(before) => before.maximum(&seen),
        None => seen,
    });
}

impl Encoder {
    /// Takes the encoder of a `family` model shaped as `shape` from `weights` (by the
    /// family's names), its matrix products in `precision` ([`Precision::Auto`] resolved for
    /// this CPU). What is left in `weights` (a classifier's head) stays there.
    ///
    /// int8 calibrates: the model runs once in f32 over `calibration` (token sequences,
    /// `[CLS] … [SEP]`), each linear layer's input range per channel is recorded, and the
    /// layers are quantized smoothed for those ranges; the
    /// feed-forward output projections — whose inputs (GELU outputs over the wide
    /// intermediate) lose the most to int8 — run in bf16 where the CPU has it, else f32.
    /// Other precisions ignore `calibration`.
    pub fn load(
        weights: &mut Weights,
        family: &dyn Family,
        shape: &EncoderShape,
        precision: Precision,
        calibration: &[Vec<i64>],
    ) -> Result<Self> {
        shape.check()?;
        let cpu = CpuFeatures::detect();
        let (precision, _) = precision.resolve(cpu);
        // int8 starts from the f32 layers it measures.
        let built = match precision {
            Precision::Int8 => Precision::F32,
            other => other,
        };
        let (hidden, width) = (shape.hidden_size, shape.embedding_width());
        let norm = |weights: &mut Weights, prefix: &str, width: i64| {
            Ok::<_, Error>(LayerNorm {
                weight: weights.take_shaped(&format!("{prefix}.weight"), &[width])?,
                bias: weights.take_shaped(&format!("{prefix}.bias"), &[width])?,
                eps: shape.layer_norm_eps,
            })
        };
        let linear = |weights: &mut Weights, prefix: &str, shape: [i64; 2]| {
            Ok::<_, Error>(Linear::new(
                weights.take_shaped(&format!("{prefix}.weight"), &shape)?,
                weights.take_shaped(&format!("{prefix}.bias"), &shape[..1])?,
                built,
            ))
        };
        let word_embeddings = weights.take("embeddings.word_embeddings.weight")?;
        let position_embeddings = weights.take("embeddings.position_embeddings.weight")?;
        let token_type_embedding = weights
            .take("embeddings.token_type_embeddings.weight")?
            .get(0);
        for (name, tensor) in [
            ("word", &word_embeddings),
            ("position", &position_embeddings),
        ] {
            if tensor.size().get(1) != Some(&width) {
                return Err(Error::InvalidModel(format!(
                    "the {name} embeddings are {:?}; config.json makes them {width} wide",
                    tensor.size()
                )));
            }
        }
        let embeddings_norm = norm(weights, "embeddings.LayerNorm", width)?;
        let embeddings_project = match (width == hidden, family.embeddings_project()) {
            (true, _) => None,
            (false, Some(name)) => Some(linear(weights, name, [hidden, width])?),
            (false, None) => {
                return Err(Error::InvalidModel(format!(
                    "config.json makes the embeddings {width} wide and the hidden states \
                     {hidden}; a {} model has no projection between them",
                    family.model_type()
                )))
            }
        };
        let mut layers = Vec::with_capacity(shape.num_hidden_layers);
        for i in 0..shape.num_hidden_layers {
            let names = family.layer(i);
            let mut take = |name: &str, part: &str, shape: &[i64]| {
                weights.take_shaped(&format!("{name}.{part}"), shape)
            };
            let qkv_weight = Tensor::cat(
                &[
                    take(&names.query, "weight", &[hidden, hidden])?,
                    take(&names.key, "weight", &[hidden, hidden])?,
                    take(&names.value, "weight", &[hidden, hidden])?,
                ],
                0,
            );
            let qkv_bias = Tensor::cat(
                &[
                    take(&names.query, "bias", &[hidden])?,
                    take(&names.key, "bias", &[hidden])?,
                    take(&names.value, "bias", &[hidden])?,
                ],
                0,
            );
            // The feed-forward width, as the weights have it.
            let inner_bias = weights.take(&format!("{}.bias", names.intermediate))?;
            let inner = inner_bias.size()[0];
            let intermediate = Linear::new(
                weights.take_shaped(&format!("{}.weight", names.intermediate), &[inner, hidden])?,
                inner_bias,
                built,
            );
            layers.push(Layer {
                qkv: Linear::new(qkv_weight, qkv_bias, built),
                attention_output: linear(weights, &names.attention_output, [hidden, hidden])?,
                attention_norm: norm(weights, &names.attention_norm, hidden)?,
                intermediate,
                output: linear(weights, &names.output, [hidden, inner])?,
                output_norm: norm(weights, &names.output_norm, hidden)?,
            });
        }
        let mut encoder = Self {
            word_embeddings,
            position_embeddings,
            token_type_embedding,
            embeddings_norm,
            embeddings_project,
            layers,
            heads: shape.num_attention_heads,
            hidden,
            precision,
        };
        if precision == Precision::Int8 {
            encoder.quantize(calibration, cpu);
        }
        Ok(encoder)
    }

    /// Runs `calibration` through the f32 layers, one sequence at a time (no padding to
    /// skew the ranges), and quantizes them for the ranges seen.
    fn quantize(&mut self, calibration: &[Vec<i64>], cpu: &CpuFeatures) {
        let mut ranges = Ranges {
            project: None,
            layers: (0..self.layers.len()).map(|_| Default::default()).collect(),
        };
        for ids in calibration.iter().filter(|ids| !ids.is_empty()) {
            let ids: Vec<i64> = ids.iter().take(self.max_positions()).copied().collect();
            let ids = Tensor::from_slice(&ids).view([1, -1]);
            let mask = ids.ones_like();
            let _ = self.run(&ids, &mask, Some(&mut ranges));
        }
        let levels = match cpu.vnni() {
            true => WEIGHT_LEVELS_VNNI,
            false => WEIGHT_LEVELS_AVX2,
        };
        // A layer no calibration text reached (none given) is quantized unsmoothed.
        let quantize = |linear: &mut Linear, range: &Option<Tensor>| {
            if let Some(quantized) = linear.quantized(range.as_ref(), levels) {
                *linear = quantized;
            }
        };
        if let Some(project) = &mut self.embeddings_project {
            quantize(project, &ranges.project);
        }
        for (layer, [qkv, attention_output, intermediate, _]) in
            self.layers.iter_mut().zip(&ranges.layers)
        {
            quantize(&mut layer.qkv, qkv);
            quantize(&mut layer.attention_output, attention_output);
            quantize(&mut layer.intermediate, intermediate);
            if cpu.native_bf16() {
                if let Some(bf16) = layer.output.to_bf16() {
                    layer.output = bf16;
                }
            }
        }
    }

    /// The kind the attention computes in: bf16 where the query/key/value product is bf16.
    fn attention_kind(&self) -> Kind {
        match self.layers.first().map(|layer| &layer.qkv) {
            Some(Linear::Bf16 { .. }) => Kind::BFloat16,
            _ => Kind::Float,
        }
    }

    /// The precision the matrix products run in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The width of the hidden states (and of a mean-pooled embedding).
    pub fn hidden_size(&self) -> usize {
        self.hidden as usize
    }

    /// The longest input in tokens: the positions the model has embeddings for.
    pub fn max_positions(&self) -> usize {
        self.position_embeddings.size()[0] as usize
    }

    /// The last hidden states `[batch, tokens, hidden]` of token ids `[batch, tokens]`
    /// (int64) with attention mask `[batch, tokens]` (1 for tokens, 0 for padding).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        self.run(ids, mask, None)
    }

    /// [`Encoder::forward`], recording each linear layer's input ranges into `ranges`.
    ///
    /// The hidden states are kept *packed*: one row per real token, `[tokens, hidden]`,
    /// padding left out. Every layer but the attention works token by token, so only the
    /// attention sees the padded `[batch, tokens]` grid (its query/key/value rows scattered
    /// into it and its output gathered back), and the linear layers, layer norms and GELU
    /// compute no padding at all.
    fn run(&self, ids: &Tensor, mask: &Tensor, mut ranges: Option<&mut Ranges>) -> Tensor {
        tch::no_grad(|| {
            let (batch, tokens) = ids.size2().unwrap_or((0, 0));
            let grid = Grid::new(mask, batch, tokens, self.heads, self.attention_kind());
            let embedded = self
                .word_embeddings
                .index_select(0, &grid.pack(&ids.flatten(0, -1)))
                + self.position_embeddings.index_select(0, &grid.positions())
                + &self.token_type_embedding;
            let mut hidden = self.embeddings_norm.forward(&embedded);
            if let Some(project) = &self.embeddings_project {
                if let Some(ranges) = ranges.as_deref_mut() {
                    observe(&mut ranges.project, &hidden);
                }
                hidden = project.forward(&hidden).to_kind(Kind::Float);
            }
            for (i, layer) in self.layers.iter().enumerate() {
                let seen = ranges.as_deref_mut().map(|r| &mut r.layers[i]);
                hidden = self.layer_forward(layer, &hidden, &grid, seen);
            }
            grid.unpack(&hidden).view([batch, tokens, self.hidden])
        })
    }

    /// One layer over packed f32 hidden states `[tokens, hidden]`. Each linear layer runs in
    /// its precision and hands its output on in it: in bf16 the query/key/value product, the
    /// attention and its output projection stay bf16, and so do the feed-forward product, its
    /// GELU and the output projection; residual sums and layer norms are f32 (`torch.autocast`'s
    /// split). With `seen`, the four linear layers' inputs are recorded there.
    fn layer_forward(
        &self,
        layer: &Layer,
        hidden: &Tensor,
        grid: &Grid,
        mut seen: Option<&mut [Option<Tensor>; 4]>,
    ) -> Tensor {
        let mut record = |slot: usize, x: &Tensor| {
            if let Some(seen) = seen.as_deref_mut() {
                observe(&mut seen[slot], x);
            }
        };
        record(0, hidden);
        let qkv = grid.unpack(&layer.qkv.forward(hidden));
        let context = grid.pack(&attention(&qkv, grid, self.heads));
        record(1, &context);
        // bf16 + f32 adds in f32.
        let attended = layer
            .attention_norm
            .forward(&(layer.attention_output.forward(&context) + hidden));
        record(2, &attended);
        let intermediate = layer.intermediate.forward(&attended).gelu("none");
        record(3, &intermediate);
        layer
            .output_norm
            .forward(&(layer.output.forward(&intermediate) + attended))
    }
}

/// Where a pass's tokens sit in its `[batch, tokens]` grid: the rows of the real ones, to
/// pack hidden states (one row per token) and unpack them (one row per grid cell, padding
/// zero).
struct Grid {
    batch: i64,
    tokens: i64,
    /// The grid cells (row-major) the mask keeps; `None` when it keeps them all.
    kept: Option<Tensor>,
    /// The attention's additive mask, 0 for tokens and -inf for padding, in its kind:
    /// `[batch * heads, 1, tokens]` (the batched products' layout).
    additive: Tensor,
}

impl Grid {
    /// The grid of a pass's `mask` `[batch, tokens]`, for an attention of `heads` heads
    /// computing in `kind`.
    fn new(mask: &Tensor, batch: i64, tokens: i64, heads: i64, kind: Kind) -> Self {
        let keep = mask.to_kind(Kind::Bool);
        let count = keep.sum(Kind::Int64).int64_value(&[]);
        let kept = (count < batch * tokens).then(|| keep.flatten(0, -1).nonzero().view([-1]));
        let padding = keep
            .logical_not()
            .view([batch, 1, 1, tokens])
            .expand([batch, heads, 1, tokens], false)
            .reshape([batch * heads, 1, tokens]);
        let additive = Tensor::zeros([batch * heads, 1, tokens], (kind, tch::Device::Cpu))
            .masked_fill(&padding, f64::NEG_INFINITY);
        Self {
            batch,
            tokens,
            kept,
            additive,
        }
    }

    /// The real tokens' rows of `x` (`[batch * tokens, …]`).
    fn pack(&self, x: &Tensor) -> Tensor {
        match &self.kept {
            Some(kept) => x.index_select(0, kept),
            None => x.shallow_clone(),
        }
    }

    /// Packed rows back in the grid `[batch * tokens, width]`, zero at the padding.
    fn unpack(&self, x: &Tensor) -> Tensor {
        match &self.kept {
            Some(kept) => {
                let width = x.size()[1];
                Tensor::zeros([self.batch * self.tokens, width], (x.kind(), x.device()))
                    .index_copy(0, kept, x)
            }
            None => x.shallow_clone(),
        }
    }

    /// Each real token's position in its text.
    fn positions(&self) -> Tensor {
        let all = Tensor::arange(self.tokens, (Kind::Int64, tch::Device::Cpu)).repeat([self.batch]);
        self.pack(&all)
    }
}

/// f32 passes whose texts are at most this long (in tokens) attend with two batched matrix
/// products and a softmax between them; longer ones through PyTorch's fused attention, which
/// wins there (measured on MiniLM's shapes: at 16 tokens the products take a third of its
/// time, at 128 three times it). bf16 always takes the products: they win at every length
/// measured, up to 256 tokens (their scores, `heads · tokens²` per text, stay within tens of
/// MB under the service's token budget per pass).
const SHORT_ATTENTION_TOKENS: i64 = 64;

/// Multi-head attention over the grid's query/key/value rows `[batch * tokens, 3 * hidden]`,
/// padding never attended to; the context rows `[batch * tokens, hidden]`, in the rows' kind.
fn attention(qkv: &Tensor, grid: &Grid, heads: i64) -> Tensor {
    let (batch, tokens) = (grid.batch, grid.tokens);
    let width = qkv.size()[1] / 3;
    let head_width = width / heads;
    let kind = qkv.kind();
    // [3, batch, heads, tokens, head width]
    let qkv = qkv
        .view([batch, tokens, 3, heads, head_width])
        .permute([2, 0, 3, 1, 4]);
    let context = if kind == Kind::BFloat16 || tokens <= SHORT_ATTENTION_TOKENS {
        let split = |i: i64| qkv.get(i).reshape([batch * heads, tokens, head_width]);
        let scores = grid.additive.baddbmm(
            &split(0),
            &split(1).transpose(1, 2),
            1.0,
            1.0 / (head_width as f64).sqrt(),
        );
        scores
            .softmax(-1, kind)
            .bmm(&split(2))
            .view([batch, heads, tokens, head_width])
    } else {
        // (tch 0.17 passes a `None` mask as an undefined tensor, which libtorch refuses: the
        // mask is always given.)
        let mask = grid.additive.view([batch, heads, 1, tokens]);
        Tensor::scaled_dot_product_attention(
            &qkv.get(0),
            &qkv.get(1),
            &qkv.get(2),
            Some(&mask),
            0.0,
            false,
            None,
        )
    };
    context.transpose(1, 2).reshape([batch * tokens, width])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_read_electra_and_bert_configs() {
        let electra: EncoderShape = serde_json::from_str(
            r#"{"hidden_size": 64, "embedding_size": 32, "num_attention_heads": 4,
                "num_hidden_layers": 2, "max_position_embeddings": 128}"#,
        )
        .unwrap();
        assert_eq!(electra.embedding_width(), 32);
        assert_eq!(electra.max_position_embeddings, Some(128));
        let bert: EncoderShape = serde_json::from_str(
            r#"{"hidden_size": 48, "num_attention_heads": 4, "num_hidden_layers": 1}"#,
        )
        .unwrap();
        assert_eq!(bert.embedding_width(), 48);
        assert_eq!(bert.hidden_act, "gelu");
    }
}
