//! A token classifier's per-token scores to entities, as transformers' token-classification
//! pipeline makes them with `aggregation_strategy="simple"`: each token takes its most likely
//! label; adjacent tokens of one entity type join (a `B-` label starts a new entity); a
//! group's score is the mean of its tokens'; groups labelled `O` are dropped.

use so1s_core::Entity;

/// One token of a text: its id, its character span (`None`: a special token, skipped) and
/// its score per label.
pub(crate) struct Token<'a> {
    pub(crate) id: i64,
    pub(crate) span: Option<(usize, usize)>,
    pub(crate) scores: &'a [f64],
}

/// The entities of one text's `tokens`, labelled from `labels` (by id); `word` decodes a
/// group's token ids as the tokenizer does (`convert_tokens_to_string`).
pub(crate) fn group(
    labels: &[String],
    tokens: &[Token],
    word: impl Fn(&[i64]) -> String,
) -> Vec<Entity> {
    struct Tagged<'l> {
        id: i64,
        span: (usize, usize),
        label: &'l str,
        score: f64,
    }
    let tagged = tokens.iter().filter_map(|token| {
        let span = token.span?;
        let (best, score) = token
            .scores
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        Some(Tagged {
            id: token.id,
            span,
            label: labels.get(best).map_or("", String::as_str),
            score,
        })
    });
    let mut groups: Vec<Vec<Tagged>> = Vec::new();
    for token in tagged {
        let (begins, tag) = bio(token.label);
        match groups.last_mut() {
            Some(last) if !begins && bio(last[0].label).1 == tag => last.push(token),
            _ => groups.push(vec![token]),
        }
    }
    groups
        .into_iter()
        .filter_map(|group| {
            let first = group.first()?;
            let entity_group = bio(first.label).1.to_owned();
            if entity_group == "O" {
                return None;
            }
            let ids: Vec<i64> = group.iter().map(|t| t.id).collect();
            Some(Entity {
                entity_group,
                word: word(&ids),
                start: first.span.0,
                end: group.last()?.span.1,
                score: group.iter().map(|t| t.score).sum::<f64>() / group.len() as f64,
            })
        })
        .collect()
}

/// A label's `B-`/`I-` prefix and its entity type: `(true, "PER")` for `B-PER`, `(false,
/// "PER")` for `I-PER`; a label without either continues (`(false, label)`).
fn bio(label: &str) -> (bool, &str) {
    match (label.strip_prefix("B-"), label.strip_prefix("I-")) {
        (Some(tag), _) => (true, tag),
        (None, Some(tag)) => (false, tag),
        _ => (false, label),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_group_as_transformers_simple_aggregation() {
        let labels: Vec<String> = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
            .map(String::from)
            .to_vec();
        let one_hot = |i: usize, p: f64| {
            let mut s = vec![(1.0 - p) / 4.0; 5];
            s[i] = p;
            s
        };
        let scores = [
            one_hot(0, 0.9), // [CLS], special
            one_hot(1, 0.8), // bong
            one_hot(2, 0.6), // ##joon
            one_hot(1, 0.7), // B-PER again: a new entity
            one_hot(0, 0.9), // O
            one_hot(4, 0.5), // I-LOC after O: an entity of its own
            one_hot(4, 0.7),
            one_hot(3, 0.9), // B-LOC
        ];
        let spans = [
            None,
            Some((0, 4)),
            Some((4, 8)),
            Some((9, 12)),
            Some((13, 15)),
            Some((16, 21)),
            Some((21, 24)),
            Some((25, 30)),
        ];
        let tokens: Vec<Token> = scores
            .iter()
            .zip(spans)
            .enumerate()
            .map(|(i, (scores, span))| Token {
                id: i as i64,
                span,
                scores,
            })
            .collect();
        let entities = group(&labels, &tokens, |ids| format!("{ids:?}"));
        let summary: Vec<(&str, &str, usize, usize)> = entities
            .iter()
            .map(|e| (e.entity_group.as_str(), e.word.as_str(), e.start, e.end))
            .collect();
        assert_eq!(
            summary,
            [
                ("PER", "[1, 2]", 0, 8),
                ("PER", "[3]", 9, 12),
                ("LOC", "[5, 6]", 16, 24),
                ("LOC", "[7]", 25, 30),
            ]
        );
        assert!((entities[0].score - 0.7).abs() < 1e-12);
        assert!((entities[2].score - 0.6).abs() < 1e-12);
        assert!(group(&labels, &tokens[..1], |_| String::new()).is_empty());
    }
}
