//! PyTorch checkpoints (`pytorch_model.bin`) read without executing anything, and written
//! out as safetensors.
//!
//! A `torch.save` file is a zip: `<dir>/data.pkl` (a pickle of the state dict) and one
//! `<dir>/data/<key>` file per storage (raw little-endian numbers). A pickle is a program for
//! Python's unpickler: it may name any global and call it, which is how a `__reduce__` to
//! `os.system` runs code when Python loads such a file. Here the pickle is only read: its
//! opcodes run on a small stack machine of plain values, and the only globals it may name are
//! the ones a state dict needs — `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`
//! and the `torch.*Storage` types. Any other global fails the read naming it, before anything
//! is built from it.

mod pickle;

use crate::{Error, Result};
use pickle::{malformed, unpickle, TensorRef};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

/// Largest `data.pkl` read: the pickle holds names and shapes, not the numbers.
const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// The number types of tensors a state dict may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `torch.DoubleStorage`.
    F64,
    /// `torch.FloatStorage`.
    F32,
    /// `torch.HalfStorage`.
    F16,
    /// `torch.BFloat16Storage`.
    Bf16,
    /// `torch.LongStorage`.
    I64,
    /// `torch.IntStorage`.
    I32,
    /// `torch.ShortStorage`.
    I16,
    /// `torch.CharStorage`.
    I8,
    /// `torch.ByteStorage`.
    U8,
    /// `torch.BoolStorage`.
    Bool,
}

impl Dtype {
    /// The storage type's name in `torch` (`FloatStorage`).
    fn from_storage(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Dtype::F64,
            "FloatStorage" => Dtype::F32,
            "HalfStorage" => Dtype::F16,
            "BFloat16Storage" => Dtype::Bf16,
            "LongStorage" => Dtype::I64,
            "IntStorage" => Dtype::I32,
            "ShortStorage" => Dtype::I16,
            "CharStorage" => Dtype::I8,
            "ByteStorage" => Dtype::U8,
            "BoolStorage" => Dtype::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::Bf16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }

    /// The name safetensors gives it (`F32`).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Dtype::F64 => "F64",
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::Bf16 => "BF16",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::I16 => "I16",
            Dtype::I8 => "I8",
            Dtype::U8 => "U8",
            Dtype::Bool => "BOOL",
        }
    }
}

/// One tensor of a state dict, its numbers row-major and little-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    /// The number type.
    pub dtype: Dtype,
    /// The shape.
    pub shape: Vec<usize>,
    /// `shape.iter().product() * dtype.size()` bytes.
    pub data: Vec<u8>,
}

/// The tensor's numbers, gathered from its storage by offset and stride.
fn gather(tensor: &TensorRef, storage: &[u8]) -> Result<Vec<u8>> {
    let size = tensor.dtype.size();
    let count: usize = tensor
        .shape
        .iter()
        .try_fold(1usize, |n, d| n.checked_mul(*d))
        .ok_or_else(|| malformed("a tensor larger than memory"))?;
    let elements = storage.len() / size;
    // The last element the tensor reaches must lie inside its storage.
    let last = tensor
        .shape
        .iter()
        .zip(&tensor.stride)
        .try_fold(tensor.offset, |at, (d, s)| {
            at.checked_add(d.saturating_sub(1).checked_mul(*s)?)
        });
    if count > 0 && last.is_none_or(|last| last >= elements) {
        return Err(malformed(format!(
            "storage {} holds {elements} values, fewer than its tensor reads",
            tensor.key
        )));
    }
    let mut out = Vec::with_capacity(count * size);
    let mut index = vec![0usize; tensor.shape.len()];
    for _ in 0..count {
        let at = tensor.offset
            + index
                .iter()
                .zip(&tensor.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        out.extend_from_slice(&storage[at * size..(at + 1) * size]);
        for axis in (0..index.len()).rev() {
            index[axis] += 1;
            if index[axis] < tensor.shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Ok(out)
}

/// Reads a `torch.save` zip checkpoint's state dict; its tensors by name.
pub fn read_state_dict(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let file = std::fs::File::open(path).map_err(|source| Error::ModelFile {
        path: path.to_owned(),
        source,
    })?;
    let not_zip = |e: zip::result::ZipError| {
        Error::InvalidModel(format!(
            "{} is not a whole PyTorch zip checkpoint (torch.save since 1.6; a truncated \
             upload or a legacy non-zip checkpoint reads so): {e}",
            path.display()
        ))
    };
    let mut zip = zip::ZipArchive::new(file).map_err(not_zip)?;
    let pickle_name = zip
        .file_names()
        .find(|name| name.ends_with("/data.pkl") && name.matches('/').count() == 1)
        .map(str::to_owned)
        .ok_or_else(|| malformed("there is no <dir>/data.pkl"))?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_owned();
    if let Ok(mut order) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut text = String::new();
        order
            .read_to_string(&mut text)
            .map_err(|source| Error::ModelFile {
                path: path.to_owned(),
                source,
            })?;
        if text.trim() != "little" {
            return Err(malformed(format!("byte order {text:?}")));
        }
    }
    let mut pickle = Vec::new();
    zip.by_name(&pickle_name)
        .map_err(not_zip)?
        .take(MAX_PICKLE_BYTES + 1)
        .read_to_end(&mut pickle)
        .map_err(|source| Error::ModelFile {
            path: path.to_owned(),
            source,
        })?;
    if pickle.len() as u64 > MAX_PICKLE_BYTES {
        return Err(malformed(format!(
            "data.pkl is over {MAX_PICKLE_BYTES} bytes"
        )));
    }
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = BTreeMap::new();
    for (name, tensor) in unpickle(&pickle)? {
        if !storages.contains_key(&tensor.key) {
            let mut entry = zip
                .by_name(&format!("{prefix}data/{}", tensor.key))
                .map_err(not_zip)?;
            let mut bytes = Vec::with_capacity(entry.size().min(1 << 30) as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|source| Error::ModelFile {
                    path: path.to_owned(),
                    source,
                })?;
            storages.insert(tensor.key.clone(), bytes);
        }
        let data = gather(&tensor, &storages[&tensor.key])?;
        tensors.insert(
            name,
            Tensor {
                dtype: tensor.dtype,
                shape: tensor.shape,
                data,
            },
        );
    }
    Ok(tensors)
}

/// The safetensors file of `tensors`: a little-endian u64 header length, the JSON header
/// (names, dtypes, shapes, offsets; padded with spaces to 8 bytes), then the data.
pub fn to_safetensors(tensors: &BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut offset = 0usize;
    for (name, tensor) in tensors {
        let end = offset + tensor.data.len();
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": tensor.dtype.safetensors_name(),
                "shape": tensor.shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| Error::Serialize {
        what: "the safetensors header".into(),
        source: Box::new(e),
    })?;
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for tensor in tensors.values() {
        out.extend_from_slice(&tensor.data);
    }
    Ok(out)
}

/// The checkpoint file name `torch.save`-based tools write.
pub const CHECKPOINT_FILE: &str = "pytorch_model.bin";

/// What [`convert_in_place`] did with a `pytorch_model.bin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InPlace {
    /// Converted to `model.safetensors`: this many tensors.
    Converted(usize),
    /// Removed unread: the directory had weights so1s reads already.
    Dropped,
}

/// The index of a sharded checkpoint: `{"weight_map": {tensor: shard file}}`.
pub const CHECKPOINT_INDEX: &str = "pytorch_model.bin.index.json";

/// Leaves the model directory `dir` with safetensors weights only: a `pytorch_model.bin` is
/// converted to `model.safetensors` (written beside it, then renamed into place) when no
/// weights file so1s reads is there, and removed either way, so no pickle stays in a bundle
/// or an image. A sharded checkpoint (`pytorch_model.bin.index.json` and its shards) is
/// converted shard by shard, with a `model.safetensors.index.json` naming the new shards.
/// `None` when there was no checkpoint.
pub fn convert_in_place(dir: &Path) -> Result<Option<InPlace>> {
    let bin = dir.join(CHECKPOINT_FILE);
    let index = dir.join(CHECKPOINT_INDEX);
    if !bin.is_file() && !index.is_file() {
        return Ok(None);
    }
    let readable = ["model.safetensors", super::SHARD_INDEX, "rust_model.ot"]
        .iter()
        .any(|name| dir.join(name).is_file());
    let mut done = InPlace::Dropped;
    if bin.is_file() {
        if !readable {
            done = InPlace::Converted(convert_file(&bin, &dir.join("model.safetensors"))?);
        }
        remove(&bin)?;
    }
    if index.is_file() {
        let shards = checkpoint_shards(&index)?;
        if !readable && matches!(done, InPlace::Dropped) {
            let mut count = 0;
            let mut map = serde_json::Map::new();
            let weight_map: serde_json::Value = super::read_json(&index)?;
            for (shard, name) in &shards {
                count += convert_file(&dir.join(shard), &dir.join(name))?;
            }
            for (tensor, shard) in weight_map["weight_map"].as_object().into_iter().flatten() {
                let renamed = shards
                    .iter()
                    .find(|(old, _)| Some(old.as_str()) == shard.as_str())
                    .map(|(_, new)| new.clone());
                map.insert(tensor.clone(), serde_json::Value::from(renamed));
            }
            let json = serde_json::json!({ "metadata": {}, "weight_map": map });
            std::fs::write(dir.join(super::SHARD_INDEX), json.to_string()).map_err(|source| {
                Error::Io {
                    context: format!("writing {}", super::SHARD_INDEX),
                    source,
                }
            })?;
            done = InPlace::Converted(count);
        }
        for (shard, _) in &shards {
            let path = dir.join(shard);
            if path.is_file() {
                remove(&path)?;
            }
        }
        remove(&index)?;
    }
    Ok(Some(done))
}

/// The shards `index` names, each once, with the safetensors name each becomes
/// (`pytorch_model-00001-of-00002.bin` → `….safetensors`): plain `.bin` file names only.
fn checkpoint_shards(index: &Path) -> Result<Vec<(String, String)>> {
    let index: serde_json::Value = super::read_json(index)?;
    let map = index
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| Error::InvalidModel(format!("{CHECKPOINT_INDEX} has no `weight_map`")))?;
    let mut shards: Vec<(String, String)> = Vec::new();
    for shard in map.values() {
        let name = shard.as_str().unwrap_or_default();
        let stem = name
            .strip_suffix(".bin")
            .filter(|stem| Path::new(name).components().count() == 1 && !stem.is_empty())
            .ok_or_else(|| {
                Error::InvalidModel(format!(
                    "{CHECKPOINT_INDEX} names shard `{name}`; shards are .bin files beside it"
                ))
            })?;
        if !shards.iter().any(|(old, _)| old == name) {
            shards.push((name.to_owned(), format!("{stem}.safetensors")));
        }
    }
    Ok(shards)
}

/// Converts `bin` to `out` through a partial file renamed into place; the tensors it holds.
fn convert_file(bin: &Path, out: &Path) -> Result<usize> {
    let partial = out.with_extension("safetensors.partial");
    let count = convert_to_safetensors(bin, &partial)?;
    std::fs::rename(&partial, out).map_err(|source| Error::Io {
        context: format!("renaming {} into place", partial.display()),
        source,
    })?;
    Ok(count)
}

fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|source| Error::Io {
        context: format!("removing {}", path.display()),
        source,
    })
}

/// Converts the checkpoint `bin` into the safetensors file `out`; returns how many tensors
/// it holds.
pub fn convert_to_safetensors(bin: &Path, out: &Path) -> Result<usize> {
    let tensors = read_state_dict(bin)?;
    let bytes = to_safetensors(&tensors)?;
    std::fs::write(out, bytes).map_err(|source| Error::Io {
        context: format!("writing {}", out.display()),
        source,
    })?;
    Ok(tensors.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../so1s-inference/tests/fixtures/electra-nsmc-tiny"
    );

    /// The tensors of a safetensors file, read back.
    fn read_safetensors(bytes: &[u8]) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
        let length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + length]).unwrap();
        let data = &bytes[8 + length..];
        header
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| *name != "__metadata__")
            .map(|(name, entry)| {
                let offsets: Vec<usize> =
                    serde_json::from_value(entry["data_offsets"].clone()).unwrap();
                let shape: Vec<usize> = serde_json::from_value(entry["shape"].clone()).unwrap();
                let dtype = entry["dtype"].as_str().unwrap().to_owned();
                (
                    name.clone(),
                    (dtype, shape, data[offsets[0]..offsets[1]].to_vec()),
                )
            })
            .collect()
    }

    /// A `torch.save`-shaped zip holding `pickle` as its data.pkl.
    fn checkpoint(pickle: &[u8]) -> tempfile::NamedTempFile {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        writer.start_file("archive/data.pkl", stored).unwrap();
        writer.write_all(pickle).unwrap();
        let bytes = writer.finish().unwrap().into_inner();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&bytes).unwrap();
        file
    }

    #[test]
    fn the_fixture_checkpoint_converts_to_the_tensors_transformers_saved_as_safetensors() {
        let tensors =
            read_state_dict(&Path::new(FIXTURE).join("model-bin/pytorch_model.bin")).unwrap();
        let converted = read_safetensors(&to_safetensors(&tensors).unwrap());
        let reference = read_safetensors(
            &std::fs::read(Path::new(FIXTURE).join("model/model.safetensors")).unwrap(),
        );
        assert!(!reference.is_empty());
        assert_eq!(
            converted.keys().collect::<Vec<_>>(),
            reference.keys().collect::<Vec<_>>()
        );
        for (name, expected) in &reference {
            assert_eq!(&converted[name], expected, "{name}");
        }
        let embeddings = &tensors["electra.embeddings.word_embeddings.weight"];
        assert_eq!(embeddings.dtype, Dtype::F32);
        assert_eq!(embeddings.shape.len(), 2);
    }

    #[test]
    fn a_reduce_to_os_system_is_refused_naming_the_global_and_nothing_runs() {
        let marker = tempfile::tempdir().unwrap();
        let touched = marker.path().join("ran");
        let command = format!("touch {}", touched.display());
        let mut pickle = b"\x80\x02cos\nsystem\nq\x00X".to_vec();
        pickle.extend_from_slice(&(command.len() as u32).to_le_bytes());
        pickle.extend_from_slice(command.as_bytes());
        pickle.extend_from_slice(b"\x85R.");
        let file = checkpoint(&pickle);
        let error = read_state_dict(file.path()).unwrap_err().to_string();
        assert!(error.contains("`os.system`"), "{error}");
        assert!(error.contains("nothing in it was run"), "{error}");
        assert!(!touched.exists());
    }

    #[test]
    fn a_stack_global_of_builtins_eval_is_refused_too() {
        let pickle = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x04'hi'\x85R.";
        let error = read_state_dict(checkpoint(pickle).path())
            .unwrap_err()
            .to_string();
        assert!(error.contains("`builtins.eval`"), "{error}");
    }

    #[test]
    fn what_is_not_a_state_dict_gets_a_clear_error() {
        // A list at the top, an unknown opcode, a truncated pickle, a file that is no zip.
        for (pickle, says) in [
            (&b"\x80\x02]."[..], "not a dict"),
            (&b"\x80\x02}\x00."[..], "opcode 0x00"),
            (&b"\x80\x02}(X\xff\xff\xff\x7f"[..], "ends in the middle"),
        ] {
            let error = read_state_dict(checkpoint(pickle).path())
                .unwrap_err()
                .to_string();
            assert!(error.contains(says), "{error} should say {says}");
        }
        let mut legacy = tempfile::NamedTempFile::new().unwrap();
        legacy.write_all(b"\x80\x02\x8a\x0alegacy").unwrap();
        let error = read_state_dict(legacy.path()).unwrap_err().to_string();
        assert!(
            error.contains("not a whole PyTorch zip checkpoint"),
            "{error}"
        );
    }

    #[test]
    fn a_model_directory_is_left_with_safetensors_only() {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(Path::new(FIXTURE).join("model-bin")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        let Some(InPlace::Converted(tensors)) = convert_in_place(dir.path()).unwrap() else {
            panic!("the checkpoint was not converted");
        };
        assert!(tensors > 10, "{tensors} tensors");
        assert!(!dir.path().join(CHECKPOINT_FILE).exists());
        let written =
            read_safetensors(&std::fs::read(dir.path().join("model.safetensors")).unwrap());
        let reference = read_safetensors(
            &std::fs::read(Path::new(FIXTURE).join("model/model.safetensors")).unwrap(),
        );
        assert_eq!(written, reference);
        assert!(!dir.path().join("model.safetensors.partial").exists());
        // Nothing to do the second time; beside safetensors a checkpoint is dropped unread; a
        // hostile one is an error and writes no safetensors.
        assert_eq!(convert_in_place(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join(CHECKPOINT_FILE), b"not even a zip").unwrap();
        assert_eq!(
            convert_in_place(dir.path()).unwrap(),
            Some(InPlace::Dropped)
        );
        assert!(!dir.path().join(CHECKPOINT_FILE).exists());
        let hostile = tempfile::tempdir().unwrap();
        let pickle = checkpoint(b"\x80\x02cos\nsystem\n)R.");
        std::fs::copy(pickle.path(), hostile.path().join(CHECKPOINT_FILE)).unwrap();
        assert!(convert_in_place(hostile.path()).is_err());
        assert!(!hostile.path().join("model.safetensors").exists());
    }

    #[test]
    fn a_sharded_checkpoint_becomes_sharded_safetensors() {
        let sharded = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../so1s-inference/tests/fixtures/distilbert-sst2-tiny");
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(sharded.join("model-bin-sharded")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        let Some(InPlace::Converted(tensors)) = convert_in_place(dir.path()).unwrap() else {
            panic!("the shards were not converted");
        };
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".bin"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // Every tensor of the shards, as the unsharded safetensors of the same model has it.
        let mut written = BTreeMap::new();
        for shard in
            crate::model::weight_files(&dir.path().join(crate::model::SHARD_INDEX)).unwrap()
        {
            written.extend(read_safetensors(&std::fs::read(shard).unwrap()));
        }
        assert_eq!(written.len(), tensors);
        let reference =
            read_safetensors(&std::fs::read(sharded.join("model/model.safetensors")).unwrap());
        assert_eq!(written, reference);
        // A shard named outside the directory is refused before anything is read.
        std::fs::write(
            dir.path().join(CHECKPOINT_INDEX),
            r#"{"weight_map": {"x": "../../etc/passwd.bin"}}"#,
        )
        .unwrap();
        let error = convert_in_place(dir.path()).unwrap_err().to_string();
        assert!(error.contains("beside it"), "{error}");
    }

    #[test]
    fn a_strided_tensor_is_gathered_row_major_and_a_short_storage_refused() {
        // Storage 0..6 as f32; the tensor is its 2×3 view transposed (3×2, stride [1, 3]).
        let storage: Vec<u8> = (0..6u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let mut transposed = TensorRef {
            dtype: Dtype::F32,
            key: "0".into(),
            offset: 0,
            shape: vec![3, 2],
            stride: vec![1, 3],
        };
        let values: Vec<f32> = gather(&transposed, &storage)
            .unwrap()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(values, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        transposed.offset = 1;
        let error = gather(&transposed, &storage).unwrap_err().to_string();
        assert!(error.contains("fewer than its tensor reads"), "{error}");
    }
}
