//! The attention of a pass: [`Grid`], where its packed tokens sit in the padded
//! `[batch, tokens]` grid, with the additive mask (and a family's relative position bias);
//! [`attention`], multi-head attention over it.

use tch::{Device, Kind, Tensor};

/// Where a pass's tokens sit in its `[batch, tokens]` grid: the rows of the real ones, to
/// pack hidden states (one row per token) and unpack them (one row per grid cell, padding
/// zero).
pub(super) struct Grid {
    pub(super) batch: i64,
    pub(super) tokens: i64,
    /// The grid cells (row-major) the mask keeps; `None` when it keeps them all.
    kept: Option<Tensor>,
    /// What the attention adds to its scores, in its kind: 0 for tokens and -inf for
    /// padding, plus the relative position bias when there is one: `[batch * heads, 1,
    /// tokens]`, or `[batch * heads, tokens, tokens]` with a bias (the batched products'
    /// layout).
    additive: Tensor,
}

impl Grid {
    /// The grid of a pass's `mask` `[batch, tokens]`, for an attention of `heads` heads
    /// computing in `kind`, adding `bias` (`[heads, tokens, tokens]`) when given.
    pub(super) fn new(
        mask: &Tensor,
        batch: i64,
        tokens: i64,
        heads: i64,
        kind: Kind,
        bias: Option<Tensor>,
    ) -> Self {
        let keep = mask.to_kind(Kind::Bool);
        let count = keep.sum(Kind::Int64).int64_value(&[]);
        let kept = (count < batch * tokens).then(|| keep.flatten(0, -1).nonzero().view([-1]));
        let padding = keep.logical_not().view([batch, 1, 1, tokens]);
        let masked = Tensor::zeros([batch, 1, 1, tokens], (kind, Device::Cpu))
            .masked_fill(&padding, f64::NEG_INFINITY);
        let additive = match bias {
            Some(bias) => {
                (masked + bias.to_kind(kind).unsqueeze(0)).reshape([batch * heads, tokens, tokens])
            }
            None => {
                masked
                    .expand([batch, heads, 1, tokens], false)
                    .reshape([batch * heads, 1, tokens])
            }
        };
        Self {
            batch,
            tokens,
            kept,
            additive,
        }
    }

    /// The real tokens' rows of `x` (`[batch * tokens, …]`).
    pub(super) fn pack(&self, x: &Tensor) -> Tensor {
        match &self.kept {
            Some(kept) => x.index_select(0, kept),
            None => x.shallow_clone(),
        }
    }

    /// Packed rows back in the grid `[batch * tokens, width]`, zero at the padding.
    pub(super) fn unpack(&self, x: &Tensor) -> Tensor {
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
    pub(super) fn positions(&self) -> Tensor {
        let all = Tensor::arange(self.tokens, (Kind::Int64, Device::Cpu)).repeat([self.batch]);
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

/// Terms a family adds to the attention scores from the queries and keys
/// (`[batch * heads, tokens, head width]` each): DeBERTa's disentangled ones, already
/// scaled; and the factor the content product's scale divides by (`1 / sqrt(width ·
/// factor)`).
pub(super) type ExtraScores<'a> = (&'a dyn Fn(&Tensor, &Tensor) -> Option<Tensor>, f64);

/// Multi-head attention over the grid's query/key/value rows `[batch * tokens, 3 * hidden]`,
/// padding never attended to, with a family's `extra` score terms; the context rows
/// `[batch * tokens, hidden]`, in the rows' kind.
pub(super) fn attention(
    qkv: &Tensor,
    grid: &Grid,
    heads: i64,
    extra: Option<ExtraScores>,
) -> Tensor {
    let (batch, tokens) = (grid.batch, grid.tokens);
    let width = qkv.size()[1] / 3;
    let head_width = width / heads;
    let kind = qkv.kind();
    // [3, batch, heads, tokens, head width]
    let qkv = qkv
        .view([batch, tokens, 3, heads, head_width])
        .permute([2, 0, 3, 1, 4]);
    let products = kind == Kind::BFloat16 || tokens <= SHORT_ATTENTION_TOKENS || extra.is_some();
    let context = if products {
        let split = |i: i64| qkv.get(i).reshape([batch * heads, tokens, head_width]);
        let (query, key) = (split(0), split(1));
        let factor = extra.map_or(1.0, |(_, factor)| factor);
        let mut scores = grid.additive.baddbmm(
            &query,
            &key.transpose(1, 2),
            1.0,
            1.0 / (head_width as f64 * factor).sqrt(),
        );
        if let Some(terms) = extra.and_then(|(terms, _)| terms(&query, &key)) {
            scores += terms;
        }
        scores
            .softmax(-1, kind)
            .bmm(&split(2))
            .view([batch, heads, tokens, head_width])
    } else {
        // (tch 0.17 passes a `None` mask as an undefined tensor, which libtorch refuses: the
        // mask is always given.)
        let mask = grid.additive.view([batch, heads, -1, tokens]);
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

/// MPNet's (T5's) bucket of each query–key distance in a text of `tokens` tokens,
/// `[tokens, tokens]`: half the buckets for keys before the query, half for keys after;
/// within each half, distances below 8 exact and the rest logarithmic up to 128. Computed
/// with the tensor operations transformers uses, so that the rounding at a bucket's edge is
/// the same.
pub(super) fn relative_buckets(tokens: i64) -> Tensor {
    const BUCKETS: i64 = 32;
    const MAX_DISTANCE: f64 = 128.0;
    let positions = Tensor::arange(tokens, (Kind::Int64, Device::Cpu));
    // memory − context, negated: n = query − key.
    let n = positions.unsqueeze(1) - positions.unsqueeze(0);
    let half = BUCKETS / 2;
    let direction = n.lt(0).to_kind(Kind::Int64) * half;
    let n = n.abs();
    let max_exact = half / 2;
    let large = ((n.to_kind(Kind::Float) / max_exact as f64).log()
        / (MAX_DISTANCE / max_exact as f64).ln()
        * (half - max_exact) as f64)
        .to_kind(Kind::Int64)
        + max_exact;
    let large = large.clamp_max(half - 1);
    direction + n.where_self(&n.lt(max_exact), &large)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_buckets_are_exact_near_and_logarithmic_far() {
        let buckets: Vec<Vec<i64>> = Vec::try_from(relative_buckets(200)).unwrap();
        // A key after the query (n < 0) lands in the upper half.
        assert_eq!(buckets[0][0], 0);
        assert_eq!(buckets[0][3], 16 + 3);
        assert_eq!(buckets[3][0], 3);
        // Distances 8 and beyond are logarithmic, capped at the half's last bucket.
        assert_eq!(buckets[8][0], 8);
        assert_eq!(buckets[16][0], 10);
        assert_eq!(buckets[199][0], 15);
        assert_eq!(buckets[0][199], 31);
    }
}
