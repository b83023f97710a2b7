//! Sequence-classification heads over the encoder's last hidden states: the first token's
//! state in, one logit per label out.

use super::layers::Linear;
use super::weights::Weights;
use so1s_core::model::Architecture;
use so1s_core::{Error, Result};
use tch::Tensor;

/// The head of a `*ForSequenceClassification` model.
pub struct ClassifierHead(Head);

enum Head {
    /// BERT's: the pooler (dense + tanh) on the first token, then `classifier`.
    Pooler {
        /// `pooler.dense`.
        pooler: Linear,
        /// `classifier`.
        classifier: Linear,
    },
    /// ELECTRA's: `classifier.dense` + GELU on the first token, then `classifier.out_proj`.
    Electra {
        /// `classifier.dense`.
        dense: Linear,
        /// `classifier.out_proj`.
        out_proj: Linear,
    },
}

impl ClassifierHead {
    /// Takes the head of an `architecture` classifier from `weights`, checking it fits
    /// `hidden` states and `labels` labels. Heads run in f32 (they are one or two small
    /// layers per text).
    pub fn load(
        weights: &mut Weights,
        architecture: Architecture,
        hidden: i64,
        labels: usize,
    ) -> Result<Self> {
        let labels = labels as i64;
        let mut linear = |name: &str, outputs: i64| -> Result<Linear> {
            Ok(Linear::f32(
                weights.take_shaped(&format!("{name}.weight"), &[outputs, hidden])?,
                weights.take_shaped(&format!("{name}.bias"), &[outputs])?,
            ))
        };
        match architecture {
            Architecture::Bert => Ok(ClassifierHead(Head::Pooler {
                pooler: linear("pooler.dense", hidden)?,
                classifier: linear("classifier", labels)?,
            })),
            Architecture::Electra => Ok(ClassifierHead(Head::Electra {
                dense: linear("classifier.dense", hidden)?,
                out_proj: linear("classifier.out_proj", labels)?,
            })),
            other => Err(Error::InvalidModel(format!(
                "so1s's own forward pass has no {} classification head",
                other.as_str()
            ))),
        }
    }

    /// Logits `[batch, labels]` of the last hidden states `[batch, tokens, hidden]`.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        let first = hidden.select(1, 0);
        match &self.0 {
            Head::Pooler { pooler, classifier } => {
                classifier.forward(&pooler.forward(&first).tanh())
            }
            Head::Electra { dense, out_proj } => {
                out_proj.forward(&dense.forward(&first).gelu("none"))
            }
        }
    }

    /// How many labels the head scores.
    #[cfg(test)]
    fn labels(&self) -> usize {
        match &self.0 {
            Head::Pooler {
                classifier: last, ..
            }
            | Head::Electra { out_proj: last, .. } => last.outputs() as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn random(shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn heads_score_the_first_token_with_their_own_activation() {
        tch::manual_seed(3);
        let named = |names: [&str; 2], rows: [i64; 2]| {
            Weights::from_tensors(names.iter().zip(rows).flat_map(|(name, rows)| {
                [
                    (format!("{name}.weight"), random(&[rows, 8])),
                    (format!("{name}.bias"), random(&[rows])),
                ]
            }))
        };
        let hidden = random(&[2, 5, 8]);
        let first = hidden.select(1, 0);
        let mut weights = named(["bert.pooler.dense", "classifier"], [8, 3]);
        let head = ClassifierHead::load(&mut weights, Architecture::Bert, 8, 3).unwrap();
        assert_eq!(head.labels(), 3);
        let Head::Pooler { pooler, classifier } = &head.0 else {
            panic!("a pooler head");
        };
        let expected = classifier.forward(&pooler.forward(&first).tanh());
        assert!(head.logits(&hidden).allclose(&expected, 1e-6, 1e-6, false));
        // Changing any token but the first changes nothing.
        let other = hidden.copy();
        let _ = other.narrow(1, 1, 4).fill_(9.0);
        assert!(head.logits(&other).allclose(&expected, 1e-6, 1e-6, false));

        let mut weights = named(["classifier.dense", "classifier.out_proj"], [8, 2]);
        let head = ClassifierHead::load(&mut weights, Architecture::Electra, 8, 2).unwrap();
        let Head::Electra { dense, out_proj } = &head.0 else {
            panic!("an electra head");
        };
        let expected = out_proj.forward(&dense.forward(&first).gelu("none"));
        assert!(head.logits(&hidden).allclose(&expected, 1e-6, 1e-6, false));
        assert_eq!(head.logits(&hidden).size(), [2, 2]);
    }

    #[test]
    fn a_head_that_does_not_fit_the_labels_is_refused_naming_the_tensor() {
        let mut weights = Weights::from_tensors([
            ("classifier.dense.weight".to_owned(), random(&[8, 8])),
            ("classifier.dense.bias".to_owned(), random(&[8])),
            ("classifier.out_proj.weight".to_owned(), random(&[2, 8])),
            ("classifier.out_proj.bias".to_owned(), random(&[2])),
        ]);
        let Err(error) = ClassifierHead::load(&mut weights, Architecture::Electra, 8, 3) else {
            panic!("a 2-label head loaded for 3 labels");
        };
        let error = error.to_string();
        assert!(error.contains("classifier.out_proj.weight"), "{error}");
        assert!(error.contains("[3, 8]"), "{error}");
    }
}
