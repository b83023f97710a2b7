//! Cutting a batch into forward passes, and scaling rows to unit length.

use std::ops::Range;
use tch::Tensor;

/// Rows scaled to unit L2 norm.
pub fn normalize(rows: &Tensor) -> Tensor {
    let norms = rows.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    rows / norms
}

/// How a forward pass spends its work on padding, which decides where a batch is worth
/// cutting ([`plan_passes`]). Costs are in tokens computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassCost {
    /// Every cell of the padded `[texts, longest]` grid is computed like a token (rust-bert's
    /// models); one more pass costs 16 tokens.
    Padded,
    /// Only the attention sees the padded grid — so1s's encoder keeps the other layers'
    /// rows packed, one per real token. There a text padded to `T` tokens costs `T² /
    /// (6 · hidden)` tokens' worth (attention's `4 · T² · hidden` multiply-adds against the
    /// linear layers' `24 · hidden²` per token), and one more pass costs 64 tokens (the
    /// fixed cost of its few hundred kernel launches, measured on MiniLM).
    Packed {
        /// The model's hidden width.
        hidden: usize,
    },
}

impl PassCost {
    /// The cost of one pass of `texts` texts holding `tokens` real tokens, padded to
    /// `longest`.
    pub fn of(self, texts: usize, longest: usize, tokens: usize) -> usize {
        match self {
            PassCost::Padded => 16 + texts * longest,
            PassCost::Packed { hidden } => {
                64 + tokens + texts * longest * longest / (6 * hidden.max(1))
            }
        }
    }
}

/// Runs token sequences (`[CLS] … [SEP]` each) through a model in passes of similar lengths
/// ([`plan_passes`] with `cost`): each pass pads its texts with `pad_id` to its longest and
/// calls `forward(texts, ids, mask)` (the pass's indices into `encoded`; `[texts, tokens]`
/// int64, mask 1 for tokens and 0 for padding), which returns one row per text. Rows come
/// back in the sequences' order.
pub fn run_in_passes<T: Default + Clone, S: AsRef<[i64]>>(
    encoded: &[S],
    pad_id: i64,
    cost: PassCost,
    forward: impl Fn(&[usize], &Tensor, &Tensor) -> so1s_core::Result<Vec<T>>,
) -> so1s_core::Result<Vec<T>> {
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| encoded[i].as_ref().len());
    let lengths: Vec<usize> = order.iter().map(|&i| encoded[i].as_ref().len()).collect();
    let mut out = vec![T::default(); encoded.len()];
    for pass in plan_passes(&lengths, cost) {
        let longest = lengths[pass.end - 1].max(1);
        let texts = &order[pass];
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for &i in texts {
            let tokens = encoded[i].as_ref();
            ids.extend_from_slice(tokens);
            ids.extend(std::iter::repeat_n(pad_id, longest - tokens.len()));
            mask.extend(std::iter::repeat_n(1i64, tokens.len()));
            mask.extend(std::iter::repeat_n(0i64, longest - tokens.len()));
        }
        let shape = [texts.len() as i64, longest as i64];
        let ids = Tensor::from_slice(&ids).view(shape);
        let mask = Tensor::from_slice(&mask).view(shape);
        for (&i, row) in texts.iter().zip(forward(texts, &ids, &mask)?) {
            out[i] = row;
        }
    }
    Ok(out)
}

/// Cuts texts sorted by token count (`lengths`, ascending) into consecutive passes, so that
/// their total `cost` ([`PassCost::of`]: each pass pads to its longest text) is least.
pub fn plan_passes(lengths: &[usize], cost: PassCost) -> Vec<Range<usize>> {
    let n = lengths.len();
    if n == 0 {
        return Vec::new();
    }
    // tokens[i]: the tokens of the first i texts.
    let mut tokens = vec![0; n + 1];
    for (i, length) in lengths.iter().enumerate() {
        tokens[i + 1] = tokens[i] + length;
    }
    // best[i]: the least cost of the first i texts; cut[i]: where their last pass starts.
    let mut best = vec![usize::MAX; n + 1];
    let mut cut = vec![0; n + 1];
    best[0] = 0;
    for end in 1..=n {
        for start in 0..end {
            let pass = cost.of(end - start, lengths[end - 1], tokens[end] - tokens[start]);
            if best[start] + pass < best[end] {
                best[end] = best[start] + pass;
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
        for cost in [PassCost::Padded, PassCost::Packed { hidden: 384 }] {
            assert_eq!(plan_passes(&[12; 32], cost), vec![(0..32)]);
            assert!(plan_passes(&[], cost).is_empty());
        }
    }

    #[test]
    fn a_long_tail_gets_its_own_pass() {
        // 30 texts of 10 tokens and 2 of 200: one padded pass would compute 32 * 200
        // tokens; packed, the attention of 30 texts padded to 200 costs 30 * 200² / 2304
        // = 520 tokens, more than a pass.
        let mut lengths = vec![10; 30];
        lengths.extend([200, 200]);
        for cost in [PassCost::Padded, PassCost::Packed { hidden: 384 }] {
            assert_eq!(plan_passes(&lengths, cost), [0..30, 30..32], "{cost:?}");
        }
    }

    #[test]
    fn a_cut_must_pay_for_its_pass() {
        // Padded: splitting [4 x 4 | 16 x 28] saves 4 * 12 = 48 padded tokens, more than the
        // 16 of a pass. Packed, padding costs only attention: 32 * 16² / 2304 = 3 tokens.
        let mut lengths = vec![4; 4];
        lengths.extend([16; 28]);
        assert_eq!(plan_passes(&lengths, PassCost::Padded), [0..4, 4..32]);
        assert_eq!(
            plan_passes(&lengths, PassCost::Packed { hidden: 384 }),
            vec![(0..32)]
        );
        // Splitting [4, 4 | 16 x 4] saves 2 * 12 = 24 padded tokens: more than a pass costs.
        assert_eq!(
            plan_passes(&[4, 4, 16, 16, 16, 16], PassCost::Padded),
            [0..2, 2..6]
        );
        // [4 | 16 x 4] saves 12: less than a pass.
        assert_eq!(
            plan_passes(&[4, 16, 16, 16, 16], PassCost::Padded),
            vec![(0..5)]
        );
    }

    #[test]
    fn passes_pad_with_a_mask_and_rows_come_back_in_order() {
        let encoded = vec![vec![7, 8, 9], vec![5], vec![1, 2]];
        // Each row: the ids the pass saw for that text, padding and mask included.
        let rows = run_in_passes(&encoded, 0, PassCost::Padded, |_, ids, mask| {
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
    fn rows_are_normalized() {
        let unit = normalize(&Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2]));
        assert_eq!(Vec::<f32>::try_from(unit.view([-1])).unwrap(), [0.6, 0.8]);
    }
}
