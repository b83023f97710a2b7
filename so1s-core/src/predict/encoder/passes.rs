//! Cutting a batch into forward passes, and pooling a pass's token states.

use std::ops::Range;
use tch::{Kind, Tensor};

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

/// The fixed cost of one more forward pass, in tokens computed: what cutting a batch in two
/// must save in padding to be worth it.
const PASS_COST_TOKENS: usize = 16;

/// Runs token sequences (`[CLS] … [SEP]` each) through a model in passes of similar lengths
/// ([`plan_passes`]): each pass pads its texts with `pad_id` to its longest and calls
/// `forward(ids, mask)` (`[texts, tokens]` int64, mask 1 for tokens and 0 for padding), which
/// returns one row per text. Rows come back in the sequences' order.
pub fn run_in_passes<T: Default + Clone>(
    encoded: &[Vec<i64>],
    pad_id: i64,
    forward: impl Fn(&Tensor, &Tensor) -> crate::Result<Vec<T>>,
) -> crate::Result<Vec<T>> {
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| encoded[i].len());
    let lengths: Vec<usize> = order.iter().map(|&i| encoded[i].len()).collect();
    let mut out = vec![T::default(); encoded.len()];
    for pass in plan_passes(&lengths, PASS_COST_TOKENS) {
        let longest = lengths[pass.end - 1].max(1);
        let texts = &order[pass];
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for &i in texts {
            let tokens = &encoded[i];
            ids.extend_from_slice(tokens);
            ids.extend(std::iter::repeat_n(pad_id, longest - tokens.len()));
            mask.extend(std::iter::repeat_n(1i64, tokens.len()));
            mask.extend(std::iter::repeat_n(0i64, longest - tokens.len()));
        }
        let shape = [texts.len() as i64, longest as i64];
        let ids = Tensor::from_slice(&ids).view(shape);
        let mask = Tensor::from_slice(&mask).view(shape);
        for (&i, row) in texts.iter().zip(forward(&ids, &mask)?) {
            out[i] = row;
        }
    }
    Ok(out)
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
    fn passes_pad_with_a_mask_and_rows_come_back_in_order() {
        let encoded = vec![vec![7, 8, 9], vec![5], vec![1, 2]];
        // Each row: the ids the pass saw for that text, padding and mask included.
        let rows = run_in_passes(&encoded, 0, |ids, mask| {
            let ids: Vec<Vec<i64>> = Vec::try_from(ids).unwrap();
            let mask: Vec<Vec<i64>> = Vec::try_from(mask).unwrap();
            Ok(ids.into_iter().zip(mask).collect::<Vec<_>>())
        })
        .unwrap();
        assert_eq!(rows[0], (vec![7, 8, 9], vec![1, 1, 1]));
        assert_eq!(rows[1].0[0], 5);
        assert_eq!(rows[1].1.iter().sum::<i64>(), 1);
        assert_eq!(rows[1].0.len(), rows[1].1.len());
        assert_eq!(rows[2].0[..2], [1, 2]);
        assert!(rows[2].0[2..].iter().all(|&id| id == 0));
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
