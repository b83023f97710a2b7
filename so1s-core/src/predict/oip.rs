//! The Open Inference Protocol (KServe V2, REST), as plain data: what an infer request asks,
//! read from its JSON and the binary tensor data extension, and the reply's bytes.
//!
//! A text model takes one input, a `BYTES` tensor named `text` of shape `[n]`, and answers
//! - an embedding model: `FP32` `embedding`, shape `[n, dim]`;
//! - a classifier: `BYTES` `label` `[n]`, `FP32` `score` `[n]` (the top label's probability)
//!   and `FP32` `scores` `[n, labels]` (every label's, in `id2label` order).
//!
//! Binary tensor data (the default of Triton's and KServe's Python clients): the body is the
//! JSON object, then each binary tensor's bytes in the order the JSON lists them; the
//! `Inference-Header-Content-Length` header gives the JSON's length. A `BYTES` element is a
//! 4-byte little-endian length and the bytes; `FP32` is 4 little-endian bytes per value.

use super::{InputLimits, Prediction};
use crate::model::Task;
use crate::{Error, Result};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Header giving the length of the JSON object when binary tensor data follows it.
pub const HEADER_LENGTH: &str = "inference-header-content-length";
/// The one input of a text model.
pub const TEXT_INPUT: &str = "text";

/// `POST /v2/models/{name}/infer` body's JSON object.
#[derive(Debug, Clone, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<RequestInput>,
    #[serde(default)]
    outputs: Vec<RequestOutput>,
}

#[derive(Debug, Clone, Deserialize)]
struct RequestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct RequestOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// What an infer request asks, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Infer {
    /// The request's `id`, echoed in the reply.
    pub id: Option<String>,
    /// The `text` tensor's elements.
    pub texts: Vec<String>,
    /// The outputs asked for by name, each with whether it goes back as binary data; empty
    /// when the request names none (then every output, in the request's default form).
    pub outputs: Vec<(String, bool)>,
    /// Whether outputs not named go back as binary data (`binary_data_output`).
    pub binary_by_default: bool,
    /// The request's `query` parameter: a reranker scores each text against it.
    pub query: Option<String>,
}

fn flag(parameters: &Map<String, Value>, name: &str) -> Result<Option<bool>> {
    match parameters.get(name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid(format!(
            "parameter `{name}` must be a boolean, not {other}"
        ))),
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidInput(message.into())
}

impl Infer {
    /// Reads an infer request's body: its JSON object, which is the whole body unless
    /// `json_length` (the `Inference-Header-Content-Length` header) says binary data follows.
    /// The texts are checked against `limits`.
    pub fn parse(body: &[u8], json_length: Option<usize>, limits: &InputLimits) -> Result<Self> {
        let json_length = json_length.unwrap_or(body.len());
        if json_length > body.len() {
            return Err(invalid(format!(
                "{HEADER_LENGTH} is {json_length} but the body has only {} bytes",
                body.len()
            )));
        }
        let (head, mut binary) = body.split_at(json_length);
        let request: InferRequest = serde_json::from_slice(head)
            .map_err(|e| invalid(format!("the infer request is not the JSON expected: {e}")))?;
        let mut texts = None;
        for input in &request.inputs {
            if input.name != TEXT_INPUT {
                return Err(invalid(format!(
                    "unknown input `{}`: this model takes one BYTES input `{TEXT_INPUT}`",
                    input.name
                )));
            }
            if texts.is_some() {
                return Err(invalid(format!("input `{TEXT_INPUT}` is given twice")));
            }
            if input.datatype != "BYTES" {
                return Err(invalid(format!(
                    "input `{TEXT_INPUT}` must be BYTES, not {}",
                    input.datatype
                )));
            }
            let elements = match input.parameters.get("binary_data_size") {
                Some(size) => {
                    let size = size
                        .as_u64()
                        .and_then(|s| usize::try_from(s).ok())
                        .ok_or_else(|| invalid("`binary_data_size` must be a byte count"))?;
                    if size > binary.len() {
                        return Err(invalid(format!(
                            "input `{TEXT_INPUT}` says {size} bytes of binary data; {} follow the JSON",
                            binary.len()
                        )));
                    }
                    let (data, rest) = binary.split_at(size);
                    binary = rest;
                    if input.data.is_some() {
                        return Err(invalid(format!(
                            "input `{TEXT_INPUT}` has both `data` and binary data"
                        )));
                    }
                    decode_bytes(data)?
                }
                None => {
                    let data = input.data.as_ref().ok_or_else(|| {
                        invalid(format!(
                            "input `{TEXT_INPUT}` has neither `data` nor binary data"
                        ))
                    })?;
                    let mut elements = Vec::new();
                    flatten_strings(data, &mut elements)?;
                    elements
                }
            };
            let expected = input.shape.iter().try_fold(1usize, |n, &d| {
                usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
            });
            if expected != Some(elements.len()) {
                return Err(invalid(format!(
                    "input `{TEXT_INPUT}` has shape {:?} but {} elements",
                    input.shape,
                    elements.len()
                )));
            }
            texts = Some(elements);
        }
        if !binary.is_empty() {
            return Err(invalid(format!(
                "{} bytes of binary data follow the JSON that no input claims",
                binary.len()
            )));
        }
        let texts =
            texts.ok_or_else(|| invalid(format!("the request has no input `{TEXT_INPUT}`")))?;
        if texts.is_empty() {
            return Err(invalid(format!("input `{TEXT_INPUT}` is empty")));
        }
        limits.check(&texts, |i| format!("`{TEXT_INPUT}[{i}]`"))?;
        let binary_by_default = flag(&request.parameters, "binary_data_output")?.unwrap_or(false);
        let outputs = request
            .outputs
            .iter()
            .map(|output| {
                let binary = flag(&output.parameters, "binary_data")?.unwrap_or(binary_by_default);
                Ok((output.name.clone(), binary))
            })
            .collect::<Result<_>>()?;
        let query = match request.parameters.get("query") {
            None => None,
            Some(Value::String(query)) => {
                limits.check(std::slice::from_ref(query), |_| "parameter `query`".into())?;
                Some(query.clone())
            }
            Some(other) => {
                return Err(invalid(format!(
                    "parameter `query` must be a string, not {other}"
                )))
            }
        };
        Ok(Self {
            id: request.id,
            texts,
            outputs,
            binary_by_default,
            query,
        })
    }
}

/// The elements of a `BYTES` tensor in binary form: each a 4-byte little-endian length and
/// that many bytes, here UTF-8 text.
pub fn decode_bytes(mut data: &[u8]) -> Result<Vec<String>> {
    let mut elements = Vec::new();
    while !data.is_empty() {
        let (length, rest) = data
            .split_first_chunk::<4>()
            .ok_or_else(|| invalid("a BYTES element's 4-byte length is cut short"))?;
        let length = u32::from_le_bytes(*length) as usize;
        if length > rest.len() {
            return Err(invalid(format!(
                "a BYTES element says {length} bytes; {} are left",
                rest.len()
            )));
        }
        let (element, rest) = rest.split_at(length);
        let text = std::str::from_utf8(element)
            .map_err(|_| invalid(format!("`{TEXT_INPUT}[{}]` is not UTF-8", elements.len())))?;
        elements.push(text.to_owned());
        data = rest;
    }
    Ok(elements)
}

/// `elements` in the binary form of a `BYTES` tensor.
pub fn encode_bytes<S: AsRef<[u8]>>(elements: &[S]) -> Vec<u8> {
    let size = elements.iter().map(|e| 4 + e.as_ref().len()).sum();
    let mut data = Vec::with_capacity(size);
    for element in elements {
        let element = element.as_ref();
        data.extend_from_slice(&(element.len() as u32).to_le_bytes());
        data.extend_from_slice(element);
    }
    data
}

/// JSON tensor data, nested or flat, in row-major order.
fn flatten_strings(value: &Value, into: &mut Vec<String>) -> Result<()> {
    match value {
        Value::String(s) => into.push(s.clone()),
        Value::Array(items) => {
            for item in items {
                flatten_strings(item, into)?;
            }
        }
        other => {
            return Err(invalid(format!(
                "input `{TEXT_INPUT}` must hold strings, not {other}"
            )))
        }
    }
    Ok(())
}

/// One output tensor of a reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The output's name.
    pub name: &'static str,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its elements, row-major.
    pub data: TensorData,
}

/// The elements of a tensor, by datatype.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `FP32`.
    Fp32(Vec<f32>),
    /// `BYTES` (here text).
    Bytes(Vec<String>),
}

impl TensorData {
    fn datatype(&self) -> &'static str {
        match self {
            TensorData::Fp32(_) => "FP32",
            TensorData::Bytes(_) => "BYTES",
        }
    }

    fn binary(&self) -> Vec<u8> {
        match self {
            TensorData::Fp32(values) => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            TensorData::Bytes(elements) => encode_bytes(elements),
        }
    }

    fn json(&self) -> Value {
        match self {
            TensorData::Fp32(values) => json!(values),
            TensorData::Bytes(elements) => json!(elements),
        }
    }
}

/// The outputs a model of `task` has, by name: what metadata lists and `outputs` may ask.
pub fn output_names(task: Task) -> &'static [&'static str] {
    match task {
        Task::SentenceEmbeddings => &["embedding"],
        Task::SequenceClassification => &["label", "score", "scores"],
        Task::TokenClassification => &["entities"],
        Task::Rerank => &["score", "logit"],
    }
}

/// Every output tensor of a request's predictions (one per text, with every label's scores
/// for a classifier; a text's entities as one JSON string; a reranker's scores in the texts'
/// order), in [`output_names`] order.
pub fn tensors(predictions: Vec<Prediction>) -> Result<Vec<Tensor>> {
    let n = predictions.len();
    let Some(first) = predictions.first() else {
        return Err(Error::Inference("the model returned no prediction".into()));
    };
    match first {
        Prediction::Embedding(vector) => {
            let dim = vector.len();
            let mut data = Vec::with_capacity(n * dim);
            for prediction in predictions {
                match prediction {
                    Prediction::Embedding(v) if v.len() == dim => data.extend(v),
                    _ => return Err(Error::Inference("the embeddings differ in shape".into())),
                }
            }
            Ok(vec![Tensor {
                name: "embedding",
                shape: vec![n, dim],
                data: TensorData::Fp32(data),
            }])
        }
        Prediction::Entities(_) => {
            let mut texts = Vec::with_capacity(n);
            for prediction in predictions {
                let Prediction::Entities(entities) = prediction else {
                    return Err(Error::Inference("the predictions differ in kind".into()));
                };
                texts.push(
                    serde_json::to_string(&entities)
                        .map_err(|e| Error::Inference(format!("encoding the entities: {e}")))?,
                );
            }
            Ok(vec![Tensor {
                name: "entities",
                shape: vec![n],
                data: TensorData::Bytes(texts),
            }])
        }
        Prediction::Relevance { .. } => {
            let (mut scores, mut logits) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for prediction in predictions {
                let Prediction::Relevance { score, logit } = prediction else {
                    return Err(Error::Inference("the predictions differ in kind".into()));
                };
                scores.push(score as f32);
                logits.push(logit as f32);
            }
            Ok(vec![
                Tensor {
                    name: "score",
                    shape: vec![n],
                    data: TensorData::Fp32(scores),
                },
                Tensor {
                    name: "logit",
                    shape: vec![n],
                    data: TensorData::Fp32(logits),
                },
            ])
        }
        Prediction::Label { scores, .. } => {
            let labels = scores.as_ref().map_or(0, Vec::len);
            let (mut label, mut score) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let mut all = Vec::with_capacity(n * labels);
            for prediction in predictions {
                let Prediction::Label {
                    label: top,
                    score: p,
                    scores,
                } = prediction
                else {
                    return Err(Error::Inference("the predictions differ in kind".into()));
                };
                let scores = scores.unwrap_or_default();
                if scores.len() != labels {
                    return Err(Error::Inference("the predictions differ in labels".into()));
                }
                label.push(top);
                score.push(p as f32);
                all.extend(scores.iter().map(|s| s.score as f32));
            }
            Ok(vec![
                Tensor {
                    name: "label",
                    shape: vec![n],
                    data: TensorData::Bytes(label),
                },
                Tensor {
                    name: "score",
                    shape: vec![n],
                    data: TensorData::Fp32(score),
                },
                Tensor {
                    name: "scores",
                    shape: vec![n, labels],
                    data: TensorData::Fp32(all),
                },
            ])
        }
    }
}

/// An infer reply: its body and, when binary data follows the JSON, the JSON's length (the
/// `Inference-Header-Content-Length` header).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The body.
    pub body: Vec<u8>,
    /// The JSON object's length, when binary data follows it.
    pub json_length: Option<usize>,
}

/// The reply to `infer` from the model `name` at `version` with all its output `tensors`:
/// those the request named, in its order (each as JSON or binary data as it asked), or all.
/// An output the model does not have is an error.
pub fn reply(name: &str, version: &str, infer: &Infer, tensors: Vec<Tensor>) -> Result<Reply> {
    let chosen: Vec<(Tensor, bool)> = if infer.outputs.is_empty() {
        tensors
            .into_iter()
            .map(|t| (t, infer.binary_by_default))
            .collect()
    } else {
        let mut chosen = Vec::with_capacity(infer.outputs.len());
        for (wanted, binary) in &infer.outputs {
            let tensor = tensors.iter().find(|t| t.name == wanted).ok_or_else(|| {
                let names: Vec<_> = tensors.iter().map(|t| t.name).collect();
                invalid(format!(
                    "unknown output `{wanted}`: this model has {}",
                    names.join(", ")
                ))
            })?;
            chosen.push((tensor.clone(), *binary));
        }
        chosen
    };
    let mut binary_data = Vec::new();
    let outputs: Vec<Value> = chosen
        .iter()
        .map(|(tensor, binary)| {
            let mut output = json!({
                "name": tensor.name,
                "datatype": tensor.data.datatype(),
                "shape": tensor.shape,
            });
            if *binary {
                let bytes = tensor.data.binary();
                output["parameters"] = json!({ "binary_data_size": bytes.len() });
                binary_data.extend(bytes);
            } else {
                output["data"] = tensor.data.json();
            }
            output
        })
        .collect();
    let mut head = json!({
        "model_name": name,
        "model_version": version,
        "outputs": outputs,
    });
    if let Some(id) = &infer.id {
        head["id"] = json!(id);
    }
    let mut body = serde_json::to_vec(&head)
        .map_err(|e| Error::Inference(format!("encoding the reply: {e}")))?;
    let any_binary = chosen.iter().any(|(_, binary)| *binary);
    let json_length = any_binary.then_some(body.len());
    body.extend(binary_data);
    Ok(Reply { body, json_length })
}

/// `GET /v2/models/{name}`: the model's inputs and outputs. `dims` is the output's width: the
/// embedding's dimension, or the classifier's number of labels.
pub fn model_metadata(name: &str, version: &str, task: Task, dims: usize) -> Value {
    let dims = dims as i64;
    let outputs: Vec<Value> = match task {
        Task::SentenceEmbeddings => {
            vec![json!({"name": "embedding", "datatype": "FP32", "shape": [-1, dims]})]
        }
        Task::SequenceClassification => vec![
            json!({"name": "label", "datatype": "BYTES", "shape": [-1]}),
            json!({"name": "score", "datatype": "FP32", "shape": [-1]}),
            json!({"name": "scores", "datatype": "FP32", "shape": [-1, dims]}),
        ],
        Task::TokenClassification => {
            vec![json!({"name": "entities", "datatype": "BYTES", "shape": [-1]})]
        }
        Task::Rerank => vec![
            json!({"name": "score", "datatype": "FP32", "shape": [-1]}),
            json!({"name": "logit", "datatype": "FP32", "shape": [-1]}),
        ],
    };
    let mut inputs = vec![json!({"name": TEXT_INPUT, "datatype": "BYTES", "shape": [-1]})];
    if task == Task::Rerank {
        inputs[0]["parameters"] =
            json!({"query": "the request's parameter `query`: each text is scored against it"});
    }
    json!({
        "name": name,
        "versions": [version],
        "platform": "so1s",
        "inputs": inputs,
        "outputs": outputs,
    })
}

/// `GET /v2`: the server's metadata.
pub fn server_metadata(name: &str) -> Value {
    json!({
        "name": name,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::LabelScore;

    fn limits() -> InputLimits {
        InputLimits::default()
    }

    /// A request with the texts as binary data, as tritonclient sends it.
    fn binary_request(texts: &[&str], outputs: Value) -> (Vec<u8>, usize) {
        let data = encode_bytes(texts);
        let head = json!({
            "inputs": [{"name": "text", "shape": [texts.len()], "datatype": "BYTES",
                        "parameters": {"binary_data_size": data.len()}}],
            "outputs": outputs,
        });
        let mut body = serde_json::to_vec(&head).unwrap();
        let length = body.len();
        body.extend(data);
        (body, length)
    }

    #[test]
    fn json_and_binary_requests_read_the_same_texts() {
        let json_body = json!({
            "id": "r1",
            "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["héllo", "world"]}]
        });
        let from_json =
            Infer::parse(&serde_json::to_vec(&json_body).unwrap(), None, &limits()).unwrap();
        assert_eq!(from_json.texts, ["héllo", "world"]);
        assert_eq!(from_json.id.as_deref(), Some("r1"));
        assert!(from_json.outputs.is_empty() && !from_json.binary_by_default);

        let (body, length) = binary_request(
            &["héllo", "world"],
            json!([{"name": "embedding", "parameters": {"binary_data": true}}]),
        );
        let from_binary = Infer::parse(&body, Some(length), &limits()).unwrap();
        assert_eq!(from_binary.texts, from_json.texts);
        assert_eq!(from_binary.outputs, [("embedding".to_owned(), true)]);
        // Nested JSON data (shape [2, 1]) is read row-major.
        let nested = json!({"inputs": [{"name": "text", "shape": [2, 1], "datatype": "BYTES",
                                        "data": [["a"], ["b"]]}]});
        let nested = Infer::parse(&serde_json::to_vec(&nested).unwrap(), None, &limits()).unwrap();
        assert_eq!(nested.texts, ["a", "b"]);
    }

    #[test]
    fn malformed_requests_are_refused_with_what_is_wrong() {
        let parse = |body: Value| {
            Infer::parse(&serde_json::to_vec(&body).unwrap(), None, &limits())
                .unwrap_err()
                .to_string()
        };
        let input = |name: &str, shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]});
        for (body, expected) in [
            (
                input("input_ids", json!([1]), "BYTES", json!(["a"])),
                "unknown input `input_ids`",
            ),
            (
                input("text", json!([1]), "FP32", json!([1.0])),
                "must be BYTES",
            ),
            (
                input("text", json!([3]), "BYTES", json!(["a", "b"])),
                "shape [3] but 2 elements",
            ),
            (
                input("text", json!([1]), "BYTES", json!([7])),
                "must hold strings",
            ),
            (input("text", json!([0]), "BYTES", json!([])), "is empty"),
            (
                input("text", json!([1]), "BYTES", json!([" "])),
                "`text[0]` is empty",
            ),
            (json!({"inputs": []}), "no input `text`"),
            (json!({"inputs": "text"}), "not the JSON expected"),
        ] {
            let error = parse(body);
            assert!(error.contains(expected), "{error} lacks {expected}");
        }
        let many = vec!["x"; limits().max_texts + 1];
        let error = parse(input("text", json!([many.len()]), "BYTES", json!(many)));
        assert!(error.contains("the limit is 256"), "{error}");
    }

    #[test]
    fn binary_data_must_add_up() {
        let (body, length) = binary_request(&["hello"], json!([]));
        // A length header past the body, binary bytes no input claims, a cut element.
        let past = Infer::parse(&body, Some(body.len() + 1), &limits()).unwrap_err();
        assert!(past.to_string().contains("has only"), "{past}");
        let mut extra = body.clone();
        extra.push(0);
        let unclaimed = Infer::parse(&extra, Some(length), &limits()).unwrap_err();
        assert!(
            unclaimed.to_string().contains("no input claims"),
            "{unclaimed}"
        );
        assert!(decode_bytes(&[5, 0, 0, 0, b'a']).is_err());
        assert!(decode_bytes(&[1, 0]).is_err());
        assert!(decode_bytes(&[1, 0, 0, 0, 0xff])
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
        assert_eq!(
            decode_bytes(&encode_bytes(&["", "ab"])).unwrap(),
            ["", "ab"]
        );
    }

    fn infer(outputs: Vec<(&str, bool)>, binary_by_default: bool) -> Infer {
        Infer {
            id: Some("7".into()),
            texts: vec!["a".into(), "b".into()],
            outputs: outputs
                .into_iter()
                .map(|(n, b)| (n.to_owned(), b))
                .collect(),
            binary_by_default,
            query: None,
        }
    }

    #[test]
    fn embeddings_go_back_as_json_or_binary_as_asked() {
        let predictions = vec![
            Prediction::Embedding(vec![1.0, 2.0, 3.0]),
            Prediction::Embedding(vec![4.0, 5.0, 6.5]),
        ];
        let tensors = tensors(predictions).unwrap();
        let json_reply = reply("minilm", "v1", &infer(vec![], false), tensors.clone()).unwrap();
        assert_eq!(json_reply.json_length, None);
        let head: Value = serde_json::from_slice(&json_reply.body).unwrap();
        assert_eq!(head["model_name"], "minilm");
        assert_eq!(head["model_version"], "v1");
        assert_eq!(head["id"], "7");
        assert_eq!(head["outputs"][0]["shape"], json!([2, 3]));
        assert_eq!(head["outputs"][0]["datatype"], "FP32");
        assert_eq!(
            head["outputs"][0]["data"],
            json!([1.0, 2.0, 3.0, 4.0, 5.0, 6.5])
        );

        let binary = reply("minilm", "v1", &infer(vec![], true), tensors).unwrap();
        let length = binary.json_length.unwrap();
        let head: Value = serde_json::from_slice(&binary.body[..length]).unwrap();
        assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 24);
        assert!(head["outputs"][0].get("data").is_none());
        let values: Vec<f32> = binary.body[length..]
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
    }

    #[test]
    fn a_classifier_answers_label_score_and_scores_in_the_order_asked() {
        let label = |top: &str, p: f64| Prediction::Label {
            label: top.into(),
            score: p,
            scores: Some(vec![
                LabelScore {
                    label: "neg".into(),
                    score: 1.0 - p,
                },
                LabelScore {
                    label: "pos".into(),
                    score: p,
                },
            ]),
        };
        let tensors = tensors(vec![label("pos", 0.75), label("pos", 0.5)]).unwrap();
        assert_eq!(
            tensors.iter().map(|t| t.name).collect::<Vec<_>>(),
            output_names(Task::SequenceClassification)
        );
        // `scores` as JSON, `label` as binary, in the request's order.
        let asked = infer(vec![("scores", false), ("label", true)], false);
        let answer = reply("sentiment", "v2", &asked, tensors.clone()).unwrap();
        let length = answer.json_length.unwrap();
        let head: Value = serde_json::from_slice(&answer.body[..length]).unwrap();
        assert_eq!(head["outputs"][0]["name"], "scores");
        assert_eq!(head["outputs"][0]["shape"], json!([2, 2]));
        assert_eq!(head["outputs"][0]["data"], json!([0.25, 0.75, 0.5, 0.5]));
        assert_eq!(head["outputs"][1]["name"], "label");
        assert_eq!(head["outputs"][1]["datatype"], "BYTES");
        assert_eq!(
            decode_bytes(&answer.body[length..]).unwrap(),
            ["pos", "pos"]
        );

        let unknown = reply(
            "sentiment",
            "v2",
            &infer(vec![("embedding", false)], false),
            tensors,
        );
        let error = unknown.unwrap_err().to_string();
        assert!(
            error.contains("unknown output `embedding`: this model has label, score, scores"),
            "{error}"
        );
    }

    #[test]
    fn metadata_lists_the_text_input_and_the_tasks_outputs() {
        let embedding = model_metadata("minilm", "v1", Task::SentenceEmbeddings, 384);
        assert_eq!(
            embedding["inputs"][0],
            json!({"name": "text", "datatype": "BYTES", "shape": [-1]})
        );
        assert_eq!(embedding["outputs"][0]["shape"], json!([-1, 384]));
        assert_eq!(embedding["versions"], json!(["v1"]));
        let classifier = model_metadata("sentiment", "v2", Task::SequenceClassification, 3);
        let names: Vec<&str> = classifier["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, output_names(Task::SequenceClassification));
        assert_eq!(classifier["outputs"][2]["shape"], json!([-1, 3]));
        assert_eq!(
            server_metadata("so1s-predict")["extensions"],
            json!(["binary_tensor_data"])
        );
    }
}
