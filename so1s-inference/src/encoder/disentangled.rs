//! DeBERTa's disentangled attention: the content–position and position–content terms each
//! layer adds to its attention scores ([`Disentangled`]), from relative distances bucketed as
//! DeBERTa does ([`relative_positions`]).

use super::shape::Disentanglement;
use tch::{Device, Kind, Tensor};

/// One layer's projections of the relative embeddings, `[heads, 2 · span, head width]`.
pub(super) struct Projected {
    /// Through the key projection (for content → position).
    pub(super) key: Option<Tensor>,
    /// Through the query projection (for position → content).
    pub(super) query: Option<Tensor>,
}

/// The relative embeddings through every layer's projections, computed once at load: they
/// depend on the weights only.
pub(super) struct Disentangled {
    settings: Disentanglement,
    layers: Vec<Projected>,
}

impl Disentangled {
    /// The disentanglement of `settings` over the layers' projected embeddings.
    pub(super) fn new(settings: Disentanglement, layers: Vec<Projected>) -> Self {
        Self { settings, layers }
    }

    /// How many score terms there are (content–content plus the relative ones): the
    /// attention's scale is `1 / sqrt(head width · factor)`.
    pub(super) fn scale_factor(&self) -> f64 {
        1.0 + self.settings.content_to_position as i64 as f64
            + self.settings.position_to_content as i64 as f64
    }

    /// The indices into the relative embeddings of a pass of `tokens` tokens:
    /// content → position `[tokens, tokens]` and position → content (keys by queries).
    pub(super) fn indices(&self, tokens: i64) -> (Tensor, Tensor) {
        let span = self.settings.span;
        let relative =
            relative_positions(tokens, self.settings.buckets, self.settings.max_distance);
        let c2p = (&relative + span).clamp(0, 2 * span - 1);
        let p2c = (-relative + span).clamp(0, 2 * span - 1);
        (c2p, p2c)
    }

    /// Layer `layer`'s relative terms `[batch · heads, tokens, tokens]` for queries and keys
    /// `[batch · heads, tokens, head width]`, already scaled.
    pub(super) fn scores(
        &self,
        layer: usize,
        query: &Tensor,
        key: &Tensor,
        heads: i64,
        indices: &(Tensor, Tensor),
    ) -> Option<Tensor> {
        let projected = self.layers.get(layer)?;
        let (rows, tokens, width) = query.size3().ok()?;
        let batch = rows / heads;
        let scale = 1.0 / (width as f64 * self.scale_factor()).sqrt();
        let grid = |x: &Tensor| x.view([batch, heads, tokens, width]);
        let expand = |index: &Tensor| index.expand([batch, heads, tokens, tokens], false);
        let mut score: Option<Tensor> = None;
        let mut add = |term: Tensor| {
            score = Some(match score.take() {
                Some(sum) => sum + term,
                None => term,
            })
        };
        if let (true, Some(position_key)) = (self.settings.content_to_position, &projected.key) {
            let position_key = position_key.to_kind(query.kind()).unsqueeze(0);
            let c2p = grid(query).matmul(&position_key.transpose(-1, -2));
            add(c2p.gather(-1, &expand(&indices.0), false) * scale);
        }
        if let (true, Some(position_query)) = (self.settings.position_to_content, &projected.query)
        {
            let position_query = position_query.to_kind(key.kind()).unsqueeze(0);
            let p2c = grid(key).matmul(&position_query.transpose(-1, -2));
            add(p2c.gather(-1, &expand(&indices.1), false).transpose(-1, -2) * scale);
        }
        score.map(|s| s.reshape([rows, tokens, tokens]))
    }
}

/// The relative position of each query to each key, `[tokens, tokens]` (`query − key`),
/// log-bucketed beyond half the `buckets` up to `max_distance` when `buckets` > 0, with
/// the tensor operations transformers uses (`make_log_bucket_position`), so that a bucket's
/// edges round the same.
pub(super) fn relative_positions(tokens: i64, buckets: i64, max_distance: i64) -> Tensor {
    let ids = Tensor::arange(tokens, (Kind::Int64, Device::Cpu));
    let relative = ids.unsqueeze(1) - ids.unsqueeze(0);
    if buckets <= 0 || max_distance <= 0 {
        return relative;
    }
    let mid = buckets / 2;
    let sign = relative.sign();
    let near = relative.lt(mid).logical_and(&relative.gt(-mid));
    let absolute = relative
        .abs()
        .where_self(&near.logical_not(), &Tensor::from(mid - 1));
    let denominator = Tensor::from(((max_distance - 1) as f64 / mid as f64) as f32).log();
    let log_position = ((absolute.to_kind(Kind::Float) / mid as f64).log() / denominator
        * (mid - 1) as f64)
        .ceil()
        + mid as f64;
    let bucketed = relative
        .to_kind(Kind::Float)
        .where_self(&absolute.le(mid), &(log_position * sign));
    bucketed.to_kind(Kind::Int64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_exact_near_and_log_bucketed_far() {
        let relative: Vec<Vec<i64>> = Vec::try_from(relative_positions(300, 256, 512)).unwrap();
        assert_eq!(relative[5][2], 3);
        assert_eq!(relative[2][5], -3);
        assert_eq!(relative[130][0], 130);
        assert_eq!(relative[299][0], 206);
        assert_eq!(relative[0][299], -206);
        // DeBERTa-v3's settings shrunk: 32 buckets up to 64 (the fixture's).
        let small: Vec<Vec<i64>> = Vec::try_from(relative_positions(64, 32, 64)).unwrap();
        assert_eq!((small[17][0], small[20][0], small[63][0]), (17, 19, 31));
        let exact: Vec<Vec<i64>> = Vec::try_from(relative_positions(4, 0, 0)).unwrap();
        assert_eq!(exact[3][0], 3);
    }
}
