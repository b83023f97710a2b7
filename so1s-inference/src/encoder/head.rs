//! Sequence-classification heads over the encoder's last hidden states: the first token's
//! state in, one logit per label out, by the family's names ([`HeadNames`]).

use super::family::{Activation, HeadNames};
use super::layers::Linear;
use super::weights::Weights;
use so1s_core::Result;
use tch::Tensor;

/// The head of a `*ForSequenceClassification` model: on the first token's state, a dense
/// layer and its activation if the family has one, then one logit per label.
pub struct ClassifierHead {
    dense: Option<(Linear, Activation)>,
    out: Linear,
}

impl ClassifierHead {
    /// Takes the head its family `names` from `weights`, checking it fits `hidden` states
    /// and `labels` labels. Heads run in f32 (they are one or two small layers per text).
    pub fn load(
        weights: &mut Weights,
        names: &HeadNames,
        hidden: i64,
        labels: usize,
    ) -> Result<Self> {
        let mut linear = |name: &str, outputs: i64| -> Result<Linear> {
            Ok(Linear::f32(
                weights.take_shaped(&format!("{name}.weight"), &[outputs, hidden])?,
                weights.take_shaped(&format!("{name}.bias"), &[outputs])?,
            ))
        };
        let dense = match names.dense {
            Some((name, activation)) => Some((linear(name, hidden)?, activation)),
            None => None,
        };
        Ok(ClassifierHead {
            dense,
            out: linear(names.out, labels as i64)?,
        })
    }

    /// Logits `[batch, labels]` of the last hidden states `[batch, tokens, hidden]`.
    /// A token classifier's head (every family's `*ForTokenClassification`): one linear
    /// layer, `classifier`, over each token's state.
    pub fn per_token(weights: &mut Weights, hidden: i64, labels: usize) -> Result<Self> {
        let names = HeadNames {
            dense: None,
            out: "classifier",
        };
        Self::load(weights, &names, hidden, labels)
    }

    /// Each token's logits `[batch, tokens, labels]` of hidden states `[batch, tokens,
    /// hidden]` (a [`ClassifierHead::per_token`] head).
    pub fn token_logits(&self, hidden: &Tensor) -> Tensor {
        self.out.forward(hidden)
    }

    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        let first = hidden.select(1, 0);
        let pooled = match &self.dense {
            Some((dense, activation)) => activation.apply(&dense.forward(&first)),
            None => first,
        };
        self.out.forward(&pooled)
    }

    /// How many labels the head scores.
    #[cfg(test)]
    fn labels(&self) -> usize {
        self.out.outputs() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::family;
    use so1s_core::model::Architecture;
    use tch::{Device, Kind};

    fn names(architecture: Architecture) -> HeadNames {
        family::of(architecture).unwrap().classifier()
    }

    fn random(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn heads_score_the_first_token_with_their_own_activation() {
        tch::manual_seed(3);
        let named = |names: [&str; 2], rows: [i64; 2]| {
            Weights::from_tensors(
                names.iter().zip(rows).flat_map(|(name, rows)| {
                    [
                        (format!("{name}.weight"), random(&[rows, 8])),
                        (format!("{name}.bias"), random(&[rows])),
                    ]
                }),
                "bert.",
            )
        };
        let hidden = random(&[2, 5, 8]);
        let first = hidden.select(1, 0);
        let mut weights = named(["bert.pooler.dense", "classifier"], [8, 3]);
        let head = ClassifierHead::load(&mut weights, &names(Architecture::Bert), 8, 3).unwrap();
        assert_eq!(head.labels(), 3);
        let (pooler, classifier) = (&head.dense.as_ref().unwrap().0, &head.out);
        let expected = classifier.forward(&pooler.forward(&first).tanh());
        assert!(head.logits(&hidden).allclose(&expected, 1e-6, 1e-6, false));
        // Changing any token but the first changes nothing.
        let other = hidden.copy();
        let _ = other.narrow(1, 1, 4).fill_(9.0);
        assert!(head.logits(&other).allclose(&expected, 1e-6, 1e-6, false));

        let mut weights = named(["classifier.dense", "classifier.out_proj"], [8, 2]);
        let head = ClassifierHead::load(&mut weights, &names(Architecture::Electra), 8, 2).unwrap();
        let (dense, out_proj) = (&head.dense.as_ref().unwrap().0, &head.out);
        let expected = out_proj.forward(&dense.forward(&first).gelu("none"));
        assert!(head.logits(&hidden).allclose(&expected, 1e-6, 1e-6, false));
        assert_eq!(head.logits(&hidden).size(), [2, 2]);
    }

    #[test]
    fn a_head_that_does_not_fit_the_labels_is_refused_naming_the_tensor() {
        let mut weights = Weights::from_tensors(
            [
                ("classifier.dense.weight".to_owned(), random(&[8, 8])),
                ("classifier.dense.bias".to_owned(), random(&[8])),
                ("classifier.out_proj.weight".to_owned(), random(&[2, 8])),
                ("classifier.out_proj.bias".to_owned(), random(&[2])),
            ],
            "electra.",
        );
        let Err(error) = ClassifierHead::load(&mut weights, &names(Architecture::Electra), 8, 3)
        else {
            panic!("a 2-label head loaded for 3 labels");
        };
        let error = error.to_string();
        assert!(error.contains("classifier.out_proj.weight"), "{error}");
        assert!(error.contains("[3, 8]"), "{error}");
    }
}
