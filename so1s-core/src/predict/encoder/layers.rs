//! The layers of the encoder: linear (f32 or int8) and layer normalization.

use super::Precision;
use tch::{Kind, Scalar, Tensor};

/// A linear layer `x W^T + b`.
pub(super) enum Linear {
    F32 { weight: Tensor, bias: Tensor },
    Int8(Int8Linear),
}

impl Linear {
    pub(super) fn new(weight: Tensor, bias: Tensor, precision: Precision) -> Self {
        match precision {
            Precision::F32 => Linear::F32 { weight, bias },
            Precision::Int8 => Linear::Int8(Int8Linear::new(&weight, &bias)),
        }
    }

    pub(super) fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Linear::F32 { weight, bias } => x.linear(weight, Some(bias)),
            Linear::Int8(linear) => linear.forward(x),
        }
    }

    /// Output features.
    pub(super) fn outputs(&self) -> i64 {
        match self {
            Linear::F32 { weight, .. } => weight.size()[0],
            Linear::Int8(linear) => linear.scales.size()[0],
        }
    }
}

/// A linear layer whose weights are int8, one scale per output row (symmetric, 7 bits:
/// fbgemm's AVX2 kernel adds pairs of uint8 × int8 products in 16 bits, which full-range
/// weights could overflow). fbgemm quantizes the activations per pass (uint8, per tensor)
/// and multiplies in integers; the rows' scales are applied to its output.
pub(super) struct Int8Linear {
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
        let exact =
            Linear::new(weight.shallow_clone(), bias.shallow_clone(), Precision::F32).forward(&x);
        let int8 = Linear::new(weight, bias, Precision::Int8);
        assert_eq!(int8.outputs(), 96);
        let int8 = int8.forward(&x);
        assert_eq!(int8.size(), [5, 7, 96]);
        let error = (&int8 - &exact).abs().max().double_value(&[]);
        let scale = exact.abs().max().double_value(&[]);
        assert!(error < 0.05 * scale, "error {error} vs scale {scale}");
        assert!(error > 0.0, "int8 is not exact: it really ran quantized");
    }
}
