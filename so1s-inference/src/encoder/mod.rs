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

mod attention;
mod disentangled;
pub mod family;
mod head;
mod layers;
mod passes;
mod shape;
mod weights;

pub use family::{Activation, Family};
pub use head::ClassifierHead;
pub use passes::{normalize, run_in_passes, PassCost};
pub use shape::{Disentanglement, EncoderShape};
pub use so1s_core::predict::{CpuFeatures, Precision};
pub use weights::Weights;

use attention::{attention, relative_buckets, Grid};
use disentangled::{Disentangled, Projected};
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

/// A BERT-style encoder whose forward pass so1s runs.
pub struct Encoder {
    word_embeddings: Tensor,
    /// Absolute position embeddings, the first at `position_offset`.
    position_embeddings: Option<Tensor>,
    position_offset: i64,
    /// The first token type's embedding (every token is of type 0).
    token_type_embedding: Option<Tensor>,
    /// Every token type's embedding `[types, width]`, for sentence pairs.
    token_types: Option<Tensor>,
    embeddings_norm: LayerNorm,
    /// ELECTRA's projection of narrow embeddings to the hidden width.
    embeddings_project: Option<Linear>,
    /// MPNet's relative position bias, `[buckets, heads]`.
    relative_bias: Option<Tensor>,
    /// DeBERTa's disentangled attention.
    disentangled: Option<Disentangled>,
    layers: Vec<Layer>,
    activation: Activation,
    heads: i64,
    hidden: i64,
    /// The longest input in tokens.
    max_positions: usize,
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
        let names = family.embeddings();
        let word_embeddings = weights.take(&format!("{}.weight", names.word))?;
        let position_embeddings = match (names.position, shape.absolute_positions) {
            (Some(name), true) => Some(weights.take(&format!("{name}.weight"))?),
            _ => None,
        };
        let token_types = match names.token_type {
            Some(name) => weights.take_optional(&format!("{name}.weight")),
            None => None,
        };
        let token_type_embedding = token_types.as_ref().map(|table| table.get(0));
        for (name, tensor) in [
            ("word", Some(&word_embeddings)),
            ("position", position_embeddings.as_ref()),
        ] {
            let Some(tensor) = tensor else { continue };
            if tensor.size().get(1) != Some(&width) {
                return Err(Error::InvalidModel(format!(
                    "the {name} embeddings are {:?}; config.json makes them {width} wide",
                    tensor.size()
                )));
            }
        }
        let max_positions = match &position_embeddings {
            Some(table) => (table.size()[0] - shape.position_offset).max(0) as usize,
            None => shape.max_tokens().unwrap_or(512),
        };
        let relative_bias = match family.relative_attention_bias() {
            Some(name) => {
                let table = weights.take(&format!("{name}.weight"))?;
                if table.size().get(1) != Some(&shape.num_attention_heads) {
                    return Err(Error::InvalidModel(format!(
                        "{name} is {:?}; config.json has {} attention heads",
                        table.size(),
                        shape.num_attention_heads
                    )));
                }
                Some(table)
            }
            None => None,
        };
        let embeddings_norm = norm(weights, names.norm, width)?;
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
        // DeBERTa's relative embeddings (layer-normed if the config says so), which each
        // layer projects by its key and query projections.
        let relative_embeddings = match (shape.disentanglement, family.relative_embeddings()) {
            (Some(settings), Some((table, norm_name))) => {
                let rows = 2 * settings.span;
                let table = weights.take(&format!("{table}.weight"))?;
                if table.size().first().is_none_or(|&n| n < rows)
                    || table.size().get(1) != Some(&hidden)
                {
                    return Err(Error::InvalidModel(format!(
                        "{table:?} holds {:?}; config.json makes it at least [{rows}, {hidden}]",
                        table.size()
                    )));
                }
                let table = table.narrow(0, 0, rows);
                Some(match (settings.normalized, norm_name) {
                    (true, Some(name)) => norm(weights, name, hidden)?.forward(&table),
                    _ => table,
                })
            }
            (Some(_), None) => {
                return Err(Error::InvalidModel(format!(
                    "a {} model has no relative position embeddings",
                    family.model_type()
                )))
            }
            _ => None,
        };
        let mut projected = Vec::new();
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
            if let (Some(settings), Some(table)) = (shape.disentanglement, &relative_embeddings) {
                let heads = shape.num_attention_heads;
                // [2 · span, hidden] → [heads, 2 · span, head width]
                let by_heads = |x: Tensor| x.view([x.size()[0], heads, -1]).permute([1, 0, 2]);
                let mut through = |shared: &str, own: &Option<String>| -> Result<Tensor> {
                    let name = match (settings.shared_key, own) {
                        (false, Some(own)) => own.as_str(),
                        _ => shared,
                    };
                    let weight =
                        weights.take_shaped(&format!("{name}.weight"), &[hidden, hidden])?;
                    let bias = weights.take_optional(&format!("{name}.bias"));
                    Ok(by_heads(table.linear(&weight, bias.as_ref())))
                };
                let key = match settings.content_to_position {
                    true => Some(match settings.shared_key {
                        true => by_heads(table.linear(
                            &qkv_weight.narrow(0, hidden, hidden),
                            Some(&qkv_bias.narrow(0, hidden, hidden)),
                        )),
                        false => through(&names.key, &names.position_key)?,
                    }),
                    false => None,
                };
                let query = match settings.position_to_content {
                    true => Some(match settings.shared_key {
                        true => by_heads(table.linear(
                            &qkv_weight.narrow(0, 0, hidden),
                            Some(&qkv_bias.narrow(0, 0, hidden)),
                        )),
                        false => through(&names.query, &names.position_query)?,
                    }),
                    false => None,
                };
                projected.push(Projected { key, query });
            }
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
        let activation = shape
            .activation()
            .ok_or_else(|| Error::InvalidModel(format!("no activation `{}`", shape.hidden_act)))?;
        let disentangled = shape
            .disentanglement
            .map(|settings| Disentangled::new(settings, projected));
        let mut encoder = Self {
            word_embeddings,
            position_embeddings,
            position_offset: shape.position_offset,
            token_type_embedding,
            token_types,
            embeddings_norm,
            embeddings_project,
            relative_bias,
            disentangled,
            layers,
            activation,
            heads: shape.num_attention_heads,
            hidden,
            max_positions,
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
            let _ = self.run(&ids, None, &mask, Some(&mut ranges));
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

    /// The longest input in tokens: the positions the model has embeddings for (after
    /// RoBERTa's offset).
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// The last hidden states `[batch, tokens, hidden]` of token ids `[batch, tokens]`
    /// (int64) with attention mask `[batch, tokens]` (1 for tokens, 0 for padding).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        self.run(ids, None, mask, None)
    }

    /// [`Encoder::forward`] of sentence pairs: `types` `[batch, tokens]` (int64) gives each
    /// token's segment (0 the first text, 1 the second), embedded where the family has token
    /// types (BERT's); families without them ignore it, as transformers does.
    pub fn forward_pairs(&self, ids: &Tensor, types: &Tensor, mask: &Tensor) -> Tensor {
        self.run(ids, Some(types), mask, None)
    }

    /// [`Encoder::forward`], recording each linear layer's input ranges into `ranges`.
    ///
    /// The hidden states are kept *packed*: one row per real token, `[tokens, hidden]`,
    /// padding left out. Every layer but the attention works token by token, so only the
    /// attention sees the padded `[batch, tokens]` grid (its query/key/value rows scattered
    /// into it and its output gathered back), and the linear layers, layer norms and GELU
    /// compute no padding at all.
    fn run(
        &self,
        ids: &Tensor,
        types: Option<&Tensor>,
        mask: &Tensor,
        mut ranges: Option<&mut Ranges>,
    ) -> Tensor {
        tch::no_grad(|| {
            let (batch, tokens) = ids.size2().unwrap_or((0, 0));
            // MPNet's bias of each query–key pair, [heads, tokens, tokens].
            let bias = self.relative_bias.as_ref().map(|table| {
                table
                    .index_select(0, &relative_buckets(tokens).view([-1]))
                    .view([tokens, tokens, -1])
                    .permute([2, 0, 1])
            });
            let kind = self.attention_kind();
            let grid = Grid::new(mask, batch, tokens, self.heads, kind, bias);
            let mut embedded = self
                .word_embeddings
                .index_select(0, &grid.pack(&ids.flatten(0, -1)));
            if let Some(positions) = &self.position_embeddings {
                let at = grid.positions() + self.position_offset;
                embedded += positions.index_select(0, &at);
            }
            match (types, &self.token_types, &self.token_type_embedding) {
                (Some(types), Some(table), _) => {
                    embedded += table.index_select(0, &grid.pack(&types.flatten(0, -1)));
                }
                (_, _, Some(token_type)) => embedded += token_type,
                _ => {}
            }
            let mut hidden = self.embeddings_norm.forward(&embedded);
            if let Some(project) = &self.embeddings_project {
                if let Some(ranges) = ranges.as_deref_mut() {
                    observe(&mut ranges.project, &hidden);
                }
                hidden = project.forward(&hidden).to_kind(Kind::Float);
            }
            // DeBERTa's indices into the relative embeddings, the same for every layer.
            let indices = self.disentangled.as_ref().map(|d| d.indices(tokens));
            for (i, layer) in self.layers.iter().enumerate() {
                let seen = ranges.as_deref_mut().map(|r| &mut r.layers[i]);
                let place = (i, &grid, indices.as_ref());
                hidden = self.layer_forward(layer, &hidden, place, seen);
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
        (index, grid, indices): (usize, &Grid, Option<&(Tensor, Tensor)>),
        mut seen: Option<&mut [Option<Tensor>; 4]>,
    ) -> Tensor {
        let mut record = |slot: usize, x: &Tensor| {
            if let Some(seen) = seen.as_deref_mut() {
                observe(&mut seen[slot], x);
            }
        };
        record(0, hidden);
        let qkv = grid.unpack(&layer.qkv.forward(hidden));
        let relative = |query: &Tensor, key: &Tensor| {
            let (disentangled, indices) = (self.disentangled.as_ref()?, indices?);
            disentangled.scores(index, query, key, self.heads, indices)
        };
        let extra = self.disentangled.as_ref().map(|d| {
            (
                &relative as &dyn Fn(&Tensor, &Tensor) -> Option<Tensor>,
                d.scale_factor(),
            )
        });
        let context = grid.pack(&attention(&qkv, grid, self.heads, extra));
        record(1, &context);
        // bf16 + f32 adds in f32.
        let attended = layer
            .attention_norm
            .forward(&(layer.attention_output.forward(&context) + hidden));
        record(2, &attended);
        let intermediate = self
            .activation
            .apply(&layer.intermediate.forward(&attended));
        record(3, &intermediate);
        layer
            .output_norm
            .forward(&(layer.output.forward(&intermediate) + attended))
    }
}
