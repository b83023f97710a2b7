//! The layers of the encoder: linear (f32 or int8) and layer normalization.

use super::Precision;
use tch::{Kind, Scalar, Tensor};

/// A linear layer `x W^T + b`.
pub(super) enum Linear {
    /// Weights as trained.
    F32 { weight: Tensor, bias: Tensor },
    /// Weights converted to bf16 once; the input is cast to bf16 and the product (bf16
    /// inputs, f32 accumulation in oneDNN's kernels) comes back in bf16.
    Bf16 { weight: Tensor, bias: Tensor },
    /// Quantized weights ([`Int8Linear`]).
    Int8(Int8Linear),
}

impl Linear {
    /// The layer in f32 (`Auto` is taken as f32: resolve it first) or bf16. int8 layers are
    /// made from an f32 one and its inputs' ranges ([`Linear::quantized`]).
    pub(super) fn new(weight: Tensor, bias: Tensor, precision: Precision) -> Self {
        match precision {
            Precision::Bf16 => Linear::Bf16 {
                weight: weight.to_kind(Kind::BFloat16).contiguous(),
                bias: bias.to_kind(Kind::BFloat16),
            },
            Precision::Auto | Precision::F32 | Precision::Int8 => Linear::F32 { weight, bias },
        }
    }

    /// The layer in f32, whatever the encoder's precision (heads: small layers).
    pub(super) fn f32(weight: Tensor, bias: Tensor) -> Self {
        Linear::F32 { weight, bias }
    }

    /// This f32 layer with int8 weights of at most `levels`, smoothed for inputs whose
    /// channels reach `input_max` when known ([`Int8Linear`]); `None` for a layer not in f32.
    pub(super) fn quantized(&self, input_max: Option<&Tensor>, levels: f64) -> Option<Self> {
        match self {
            Linear::F32 { weight, bias } => Some(Linear::Int8(Int8Linear::new(
                weight, bias, input_max, levels,
            ))),
            _ => None,
        }
    }

    /// This f32 layer in bf16; `None` for a layer not in f32.
    pub(super) fn to_bf16(&self) -> Option<Self> {
        match self {
            Linear::F32 { weight, bias } => Some(Linear::new(
                weight.shallow_clone(),
                bias.shallow_clone(),
                Precision::Bf16,
            )),
            _ => None,
        }
    }

    /// `x W^T + b` of an f32 or bf16 input (cast to what the layer multiplies): f32 out of
    /// f32 and int8 layers, bf16 out of bf16 ones.
    pub(super) fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Linear::F32 { weight, bias } => x.to_kind(Kind::Float).linear(weight, Some(bias)),
            Linear::Bf16 { weight, bias } => x.to_kind(Kind::BFloat16).linear(weight, Some(bias)),
            Linear::Int8(linear) => linear.forward(&x.to_kind(Kind::Float)),
        }
    }

    /// Output features.
    #[cfg(test)]
    pub(super) fn outputs(&self) -> i64 {
        match self {
            Linear::F32 { weight, .. } | Linear::Bf16 { weight, .. } => weight.size()[0],
            Linear::Int8(linear) => linear.scales.size()[0],
        }
    }
}

/// SmoothQuant's migration strength: how much of an input channel's range moves into the
/// weights (0.5 balances the two; measured best on MiniLM).
const SMOOTHING: f64 = 0.5;

/// A linear layer whose weights are int8, one scale per output row (symmetric), and whose
/// activations are quantized at each pass, one scale per token. fbgemm multiplies in
/// integers; the rows' and tokens' scales are applied to its output.
///
/// fbgemm's kernel quantizes its input with one scale for the whole tensor (uint8), so one
/// token's outliers would set the scale of every other token in the pass — and a text's
/// vector would depend on the texts batched with it. So each token's row is divided by its
/// largest magnitude first (every row then spans at most [-1, 1], and the tensor's scale is
/// in effect the row's) and the product's row multiplied back by it: per-token dynamic
/// quantization, as SmoothQuant and LLM.int8 do it.
///
/// Activations also have a few *channels* far larger than the rest. So the layer is
/// *smoothed* (SmoothQuant, Xiao et al. 2023): each input channel `j` is divided by
/// `s_j = max|x_j|^α / max|W_j|^(1−α)` (its range measured on calibration texts) and the
/// weights' column multiplied by it — the same product, with the outliers moved into the
/// weights, where per-row scales absorb them.
///
/// Weights use 8 bits where the CPU has VNNI (its dot products accumulate in 32 bits), 7
/// bits elsewhere: fbgemm's AVX2 kernel adds pairs of uint8 × int8 products in saturating
/// 16 bits, which full-range weights could overflow.
pub(super) struct Int8Linear {
    /// `[out, in]` int8, kept alive for `packed`.
    weight: Tensor,
    /// fbgemm's packed form of `weight`.
    packed: Tensor,
    /// Per output row: the sum of its quantized weights (zero point 0).
    col_offsets: Tensor,
    /// Per output row: its scale.
    scales: Tensor,
    /// The bias (f32), added once the product is scaled back.
    bias: Tensor,
    /// Zeros of the bias's shape: what fbgemm adds (its output is scaled afterwards).
    zero_bias: Tensor,
    /// `1 / s` per input channel: the input is multiplied by it before quantization.
    smoothing: Option<Tensor>,
}

/// The largest quantized weight magnitude where int8 products accumulate in 32 bits (VNNI).
pub(super) const WEIGHT_LEVELS_VNNI: f64 = 127.0;
/// The largest quantized weight magnitude on fbgemm's AVX2 kernel (7 bits).
pub(super) const WEIGHT_LEVELS_AVX2: f64 = 63.0;

impl Int8Linear {
    /// Quantizes `weight` (`[out, in]`) to `levels`, smoothed for inputs reaching
    /// `input_max` (`[in]`) when given.
    fn new(weight: &Tensor, bias: &Tensor, input_max: Option<&Tensor>, levels: f64) -> Self {
        let weight = weight.to_kind(Kind::Float);
        let (weight, smoothing) = match input_max {
            Some(input_max) => {
                let s = input_max
                    .to_kind(Kind::Float)
                    .clamp_min(1e-5)
                    .pow_tensor_scalar(SMOOTHING)
                    / weight
                        .abs()
                        .amax([0], false)
                        .clamp_min(1e-5)
                        .pow_tensor_scalar(1.0 - SMOOTHING);
                // A channel the calibration saw small is not amplified beyond the median
                // one: inputs it did not see may be larger there.
                let s = s.clamp_min(s.median().double_value(&[]));
                (&weight * &s, Some(s.reciprocal()))
            }
            None => (weight, None),
        };
        let weight = weight.contiguous();
        let scales = (weight.abs().amax([1], false) / levels).clamp_min(1e-12);
        let values = (&weight / scales.unsqueeze(1))
            .round()
            .clamp(-levels, levels)
            .to_kind(Kind::Int8)
            .contiguous();
        let col_offsets = values
            .to_kind(Kind::Int)
            .sum_dim_intlist(1, false, Kind::Int)
            .contiguous();
        let packed = values.fbgemm_pack_quantized_matrix();
        Self {
            bias: bias.to_kind(Kind::Float),
            zero_bias: bias.to_kind(Kind::Float).zeros_like(),
            weight: values,
            packed,
            col_offsets,
            scales,
            smoothing,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let smoothed;
        let x = match &self.smoothing {
            Some(inverse) => {
                smoothed = x * inverse;
                &smoothed
            }
            None => x,
        };
        // Each token's largest magnitude (the last dimension holds a token's channels).
        let rows = x
            .norm_scalaropt_dim(f64::INFINITY, [-1], true)
            .clamp_min(1e-12);
        let product = (x / &rows).fbgemm_linear_int8_weight_fp32_activation(
            &self.weight,
            &self.packed,
            &self.col_offsets,
            Scalar::float(1.0),
            Scalar::int(0),
            &self.zero_bias,
        ) * &self.scales;
        // bias + product · rows
        self.bias.addcmul(&product, &rows)
    }
}

/// Layer normalization over the last dimension.
pub(super) struct LayerNorm {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
    pub(super) eps: f64,
}

impl LayerNorm {
    pub(super) fn forward(&self, x: &Tensor) -> Tensor {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_linear_stays_close_to_f32() {
        tch::manual_seed(7);
        let weight = Tensor::randn([96, 64], (Kind::Float, tch::Device::Cpu)) * 0.05;
        let bias = Tensor::randn([96], (Kind::Float, tch::Device::Cpu)) * 0.1;
        let x = Tensor::randn([5, 7, 64], (Kind::Float, tch::Device::Cpu));
        // One input channel ten times the others: the outlier smoothing is for.
        let x = x.copy();
        let _ = x.narrow(2, 3, 1).g_mul_scalar_(10.0);
        let f32 = || Linear::new(weight.shallow_clone(), bias.shallow_clone(), Precision::F32);
        let exact = f32().forward(&x);
        let scale = exact.abs().max().double_value(&[]);
        let input_max = x.abs().amax([0, 1], false);
        let error = |linear: &Linear| {
            let out = linear.forward(&x);
            assert_eq!(out.size(), [5, 7, 96]);
            (out.to_kind(Kind::Float) - &exact)
                .abs()
                .max()
                .double_value(&[])
                / scale
        };
        let plain = error(&f32().quantized(None, WEIGHT_LEVELS_AVX2).unwrap());
        let smoothed = error(
            &f32()
                .quantized(Some(&input_max), WEIGHT_LEVELS_AVX2)
                .unwrap(),
        );
        let bf16 = error(&Linear::new(
            weight.shallow_clone(),
            bias.shallow_clone(),
            Precision::Bf16,
        ));
        for (name, e) in [("int8", plain), ("smoothed int8", smoothed), ("bf16", bf16)] {
            assert!(e < 0.05, "{name}: relative error {e}");
            assert!(e > 0.0, "{name} is not exact: it really ran in fewer bits");
        }
        assert!(smoothed < plain, "smoothing helps: {smoothed} vs {plain}");
        assert_eq!(
            f32()
                .quantized(Some(&input_max), WEIGHT_LEVELS_AVX2)
                .unwrap()
                .outputs(),
            96
        );
        assert!(f32()
            .to_bf16()
            .unwrap()
            .quantized(Some(&input_max), 63.0)
            .is_none());
        // Twice the weight levels halve the weights' rounding, where the kernel cannot
        // saturate (VNNI).
        if so1s_core::predict::CpuFeatures::detect().vnni() {
            let eight_bits = error(
                &f32()
                    .quantized(Some(&input_max), WEIGHT_LEVELS_VNNI)
                    .unwrap(),
            );
            assert!(eight_bits < smoothed, "{eight_bits} vs {smoothed}");
        }
        let bf16 = Linear::new(
            weight.shallow_clone(),
            bias.shallow_clone(),
            Precision::Bf16,
        );
        assert_eq!(bf16.forward(&x).kind(), Kind::BFloat16);
    }

    #[test]
    fn int8_tokens_are_quantized_each_on_its_own_scale() {
        tch::manual_seed(11);
        let options = (Kind::Float, tch::Device::Cpu);
        let weight = Tensor::randn([48, 32], options) * 0.05;
        let bias = Tensor::randn([48], options) * 0.1;
        let int8 = Linear::new(weight.shallow_clone(), bias.shallow_clone(), Precision::F32)
            .quantized(None, WEIGHT_LEVELS_AVX2)
            .unwrap();
        let tokens = Tensor::randn([8, 32], options);
        // A token a hundred times larger than the others, in the same pass: with one scale
        // for the whole tensor it would leave the others a few levels each.
        let loud = Tensor::randn([1, 32], options) * 100.0;
        let alone = int8.forward(&tokens);
        let together = int8
            .forward(&Tensor::cat(&[&tokens, &loud], 0))
            .narrow(0, 0, 8);
        let exact = tokens.linear(&weight, Some(&bias));
        let scale = exact.abs().max().double_value(&[]);
        let relative = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]) / scale;
        assert!(relative(&alone, &exact) < 0.05, "int8 is close to f32");
        assert!(
            relative(&together, &alone) < 0.01,
            "the loud token moved the others by {}",
            relative(&together, &alone)
        );
    }
}
