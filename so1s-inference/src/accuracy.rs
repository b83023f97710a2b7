//! The accuracy contract of `auto` precision: a faster precision (bf16) is taken only if, on
//! calibration texts, it answers within tolerance of f32 — embeddings at cosine ≥ 0.9999;
//! classification, token and rerank scores within 0.005 with the same labels, entities and
//! order. [`compare`] measures that between two passes' predictions.

pub use so1s_core::predict::accuracy::{
    Accuracy, Drift, Measure, COSINE_TOLERANCE, SCORE_TOLERANCE,
};
use so1s_core::Prediction;

/// The drift of `candidate` from `reference`, prediction by prediction (the same inputs,
/// in order).
pub fn compare(reference: &[Prediction], candidate: &[Prediction]) -> Drift {
    let mut cosine = 1.0f64;
    let mut change = 0.0f64;
    let mut same = reference.len() == candidate.len();
    let mut embeddings = false;
    let mut relevance = (Vec::new(), Vec::new());
    for (a, b) in reference.iter().zip(candidate) {
        match (a, b) {
            (Prediction::Embedding(x), Prediction::Embedding(y)) => {
                embeddings = true;
                cosine = cosine.min(cosine_of(x, y));
            }
            (
                Prediction::Label {
                    label: la,
                    score: sa,
                    scores: xa,
                },
                Prediction::Label {
                    label: lb,
                    score: sb,
                    scores: xb,
                },
            ) => {
                same &= la == lb;
                change = change.max((sa - sb).abs());
                for (x, y) in xa.iter().flatten().zip(xb.iter().flatten()) {
                    change = change.max((x.score - y.score).abs());
                }
            }
            (Prediction::Entities(x), Prediction::Entities(y)) => {
                same &= x.len() == y.len();
                for (x, y) in x.iter().zip(y) {
                    same &= (&x.entity_group, x.start, x.end) == (&y.entity_group, y.start, y.end);
                    change = change.max((x.score - y.score).abs());
                }
            }
            (Prediction::Relevance { score: x, .. }, Prediction::Relevance { score: y, .. }) => {
                change = change.max((x - y).abs());
                relevance.0.push(*x);
                relevance.1.push(*y);
            }
            _ => same = false,
        }
    }
    same &= rank(&relevance.0) == rank(&relevance.1);
    match embeddings {
        true => Drift {
            measure: Measure::LeastCosine,
            value: cosine,
            tolerance: COSINE_TOLERANCE,
            same_answers: same,
            texts: reference.len(),
        },
        false => Drift {
            measure: Measure::LargestScoreChange,
            value: change,
            tolerance: SCORE_TOLERANCE,
            same_answers: same,
            texts: reference.len(),
        },
    }
}

fn cosine_of(x: &[f32], y: &[f32]) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    match norm(x) * norm(y) {
        n if n > 0.0 => dot / n,
        _ => f64::from(x == y),
    }
}

/// The indices of `scores`, highest first.
fn rank(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use so1s_core::Entity;

    fn label(label: &str, score: f64) -> Prediction {
        Prediction::Label {
            label: label.into(),
            score,
            scores: None,
        }
    }

    #[test]
    fn the_contract_holds_only_within_tolerance_and_with_the_same_answers() {
        let close = compare(&[label("pos", 0.951)], &[label("pos", 0.948)]);
        assert!(close.within(), "{close:?}");
        // The seed's ELECTRA under bf16: the label held, the score did not.
        let moved = compare(&[label("pos", 0.951)], &[label("pos", 0.927)]);
        assert!(!moved.within() && moved.same_answers, "{moved:?}");
        let flipped = compare(&[label("pos", 0.501)], &[label("neg", 0.502)]);
        assert!(!flipped.within() && !flipped.same_answers);

        let e = |x: &[f32]| Prediction::Embedding(x.to_vec());
        let near = compare(&[e(&[1.0, 0.0])], &[e(&[1.0, 0.001])]);
        assert_eq!(near.measure, Measure::LeastCosine);
        assert!(near.within(), "{near:?}");
        assert!(!compare(&[e(&[1.0, 0.0])], &[e(&[1.0, 0.1])]).within());

        let r = |score: f64| Prediction::Relevance { score, logit: 0.0 };
        assert!(compare(&[r(0.5), r(0.6)], &[r(0.501), r(0.601)]).within());
        let reordered = compare(&[r(0.5), r(0.502)], &[r(0.503), r(0.501)]);
        assert!(reordered.value <= SCORE_TOLERANCE && !reordered.within());

        let entity = |start: usize, score: f64| {
            Prediction::Entities(vec![Entity {
                entity_group: "PER".into(),
                word: "bong".into(),
                start,
                end: start + 4,
                score,
            }])
        };
        assert!(compare(&[entity(0, 0.9)], &[entity(0, 0.902)]).within());
        assert!(!compare(&[entity(0, 0.9)], &[entity(1, 0.9)]).within());
        assert!(!compare(&[label("pos", 0.9)], &[e(&[1.0])]).within());
    }
}
