//! The pickle of a state dict run on a small stack machine of plain values: the opcodes
//! `torch.save` writes (protocols 2 to 5), and calls of the allowed globals only.

use super::Dtype;
use crate::{Error, Result};
use std::collections::HashMap;

/// The globals a state dict's pickle may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Global {
    OrderedDict,
    RebuildTensor,
    Storage(Dtype),
}

impl Global {
    fn resolve(module: &str, name: &str) -> Result<Self> {
        let allowed = match (module, name) {
            ("collections", "OrderedDict") => Some(Global::OrderedDict),
            ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensor),
            ("torch", storage) => Dtype::from_storage(storage).map(Global::Storage),
            _ => None,
        };
        allowed.ok_or_else(|| {
            Error::InvalidModel(format!(
                "pytorch_model.bin names the global `{module}.{name}`, which a state dict does \
                 not need: refused (nothing in it was run)"
            ))
        })
    }
}

/// A tensor as the pickle describes it: where its numbers are.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TensorRef {
    pub(super) dtype: Dtype,
    pub(super) key: String,
    pub(super) offset: usize,
    pub(super) shape: Vec<usize>,
    pub(super) stride: Vec<usize>,
}

/// The values of the stack machine.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage { dtype: Dtype, key: String },
    Tensor(TensorRef),
}

impl Value {
    fn int(&self) -> Result<i64> {
        match self {
            Value::Int(n) => Ok(*n),
            Value::Bool(b) => Ok(i64::from(*b)),
            other => Err(malformed(format!("expected an integer, found {other:?}"))),
        }
    }

    fn usize(&self) -> Result<usize> {
        usize::try_from(self.int()?).map_err(|_| malformed("a negative size or offset"))
    }

    fn usizes(&self) -> Result<Vec<usize>> {
        match self {
            Value::Tuple(items) | Value::List(items) => items.iter().map(Value::usize).collect(),
            other => Err(malformed(format!(
                "expected a tuple of sizes, found {other:?}"
            ))),
        }
    }
}

pub(super) fn malformed(what: impl std::fmt::Display) -> Error {
    Error::InvalidModel(format!(
        "pytorch_model.bin's pickle is not a state dict: {what}"
    ))
}

/// Runs the pickle `bytes` on the stack machine; the state dict's tensors, in order.
pub(super) fn unpickle(bytes: &[u8]) -> Result<Vec<(String, TensorRef)>> {
    let mut pickle = Pickle {
        bytes,
        at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let root = pickle.run()?;
    let Value::Dict(items) = root else {
        return Err(malformed("the top object is not a dict"));
    };
    items
        .into_iter()
        .map(|(key, value)| match (key, value) {
            (Value::Str(name), Value::Tensor(tensor)) => Ok((name, tensor)),
            (key, _) => Err(malformed(format!(
                "the entry {key:?} is not a named tensor"
            ))),
        })
        .collect()
}

struct Pickle<'a> {
    bytes: &'a [u8],
    at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl Pickle<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| malformed("it ends in the middle of an opcode"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.bytes[self.at..];
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| malformed("a GLOBAL without its line end"))?;
        let line = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Ok(line)
    }

    fn text(&mut self, n: usize) -> Result<Value> {
        let bytes = self.take(n)?;
        Ok(Value::Str(
            String::from_utf8(bytes.to_vec())
                .map_err(|_| malformed("a string that is not UTF-8"))?,
        ))
    }

    fn pop(&mut self) -> Result<Value> {
        self.stack
            .pop()
            .ok_or_else(|| malformed("the stack ran empty"))
    }

    fn top(&mut self) -> Result<&mut Value> {
        self.stack
            .last_mut()
            .ok_or_else(|| malformed("the stack ran empty"))
    }

    /// The values pushed since the last MARK, which is dropped.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| malformed("no MARK to pop to"))?;
        if mark > self.stack.len() {
            return Err(malformed("a MARK above the stack"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&mut self, key: u32) -> Result<()> {
        let value = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| malformed(format!("memo {key} read before it was written")))?;
        self.stack.push(value);
        Ok(())
    }

    fn memo_put(&mut self, key: u32) -> Result<()> {
        let value = self.top()?.clone();
        self.memo.insert(key, value);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(malformed("SETITEMS with an odd number of values"));
        }
        let Value::Dict(dict) = self.top()? else {
            return Err(malformed("SETITEMS on something that is not a dict"));
        };
        let mut items = items.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            dict.push((key, value));
        }
        Ok(())
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            let opcode = self.u8()?;
            match opcode {
                0x80 => {
                    // PROTO: 2 to 5 are read the same way here.
                    let version = self.u8()?;
                    if version > 5 {
                        return Err(malformed(format!("pickle protocol {version}")));
                    }
                }
                0x95 => {
                    // FRAME: a length hint only.
                    self.u64()?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let n = self.u8()?;
                    self.stack.push(Value::Int(i64::from(n)));
                }
                b'M' => {
                    let n = self.u16()?;
                    self.stack.push(Value::Int(i64::from(n)));
                }
                b'J' => {
                    let n = self.u32()? as i32;
                    self.stack.push(Value::Int(i64::from(n)));
                }
                0x8a => {
                    // LONG1: a little-endian two's-complement integer of n bytes.
                    let n = usize::from(self.u8()?);
                    if n > 8 {
                        return Err(malformed("an integer wider than 64 bits"));
                    }
                    let bytes = self.take(n)?;
                    let mut wide = [if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                        0xff
                    } else {
                        0
                    }; 8];
                    wide[..n].copy_from_slice(bytes);
                    self.stack.push(Value::Int(i64::from_le_bytes(wide)));
                }
                b'G' => {
                    let bits = u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                    self.stack.push(Value::Float(f64::from_bits(bits)));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let text = self.text(n)?;
                    self.stack.push(text);
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let text = self.text(n)?;
                    self.stack.push(text);
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?)
                        .map_err(|_| malformed("a string longer than memory"))?;
                    let text = self.text(n)?;
                    self.stack.push(text);
                }
                b'U' => {
                    let n = usize::from(self.u8()?);
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(bytes));
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(bytes));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(opcode - 0x84);
                    if self.stack.len() < n {
                        return Err(malformed("a TUPLE of more values than the stack holds"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'q' => {
                    let key = u32::from(self.u8()?);
                    self.memo_put(key)?;
                }
                b'r' => {
                    let key = self.u32()?;
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = u32::try_from(self.memo.len()).unwrap_or(u32::MAX);
                    self.memo_put(key)?;
                }
                b'h' => {
                    let key = u32::from(self.u8()?);
                    self.memo_get(key)?;
                }
                b'j' => {
                    let key = self.u32()?;
                    self.memo_get(key)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack
                        .push(Value::Global(Global::resolve(&module, &name)?));
                }
                0x93 => {
                    let (name, module) = (self.pop()?, self.pop()?);
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(malformed("STACK_GLOBAL of something that is not text"));
                    };
                    self.stack
                        .push(Value::Global(Global::resolve(&module, &name)?));
                }
                b'Q' => {
                    let id = self.pop()?;
                    self.stack.push(storage(id)?);
                }
                b'R' => {
                    let (args, callable) = (self.pop()?, self.pop()?);
                    self.stack.push(reduce(callable, args)?);
                }
                b'b' => {
                    // BUILD: an OrderedDict's attributes (`_metadata`) are not needed.
                    self.pop()?;
                    if !matches!(self.top()?, Value::Dict(_) | Value::Tensor(_)) {
                        return Err(malformed("BUILD on something that is not a dict"));
                    }
                }
                b's' => {
                    let (value, key) = (self.pop()?, self.pop()?);
                    self.set_items(vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'a' => {
                    let value = self.pop()?;
                    let Value::List(list) = self.top()? else {
                        return Err(malformed("APPEND to something that is not a list"));
                    };
                    list.push(value);
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let Value::List(list) = self.top()? else {
                        return Err(malformed("APPENDS to something that is not a list"));
                    };
                    list.extend(items);
                }
                other => {
                    return Err(malformed(format!(
                        "opcode 0x{other:02x} at byte {} is not one a state dict uses",
                        self.at - 1
                    )))
                }
            }
        }
    }
}

/// A persistent id: `('storage', torch.FloatStorage, '0', 'cpu', numel)`.
fn storage(id: Value) -> Result<Value> {
    let Value::Tuple(items) = id else {
        return Err(malformed("a persistent id that is not a tuple"));
    };
    match items.as_slice() {
        [Value::Str(kind), Value::Global(Global::Storage(dtype)), Value::Str(key), ..]
            if kind == "storage" =>
        {
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(malformed(format!("the storage key {key:?}")));
            }
            Ok(Value::Storage {
                dtype: *dtype,
                key: key.clone(),
            })
        }
        _ => Err(malformed(format!("the persistent id {items:?}"))),
    }
}

/// A call the pickle asks for, of the only callables it may name.
fn reduce(callable: Value, args: Value) -> Result<Value> {
    let Value::Tuple(args) = args else {
        return Err(malformed("REDUCE with arguments that are not a tuple"));
    };
    match callable {
        Value::Global(Global::OrderedDict) if args.is_empty() => Ok(Value::Dict(Vec::new())),
        Value::Global(Global::RebuildTensor) => match args.as_slice() {
            // (storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
            [Value::Storage { dtype, key }, offset, size, stride, ..] => {
                let tensor = TensorRef {
                    dtype: *dtype,
                    key: key.clone(),
                    offset: offset.usize()?,
                    shape: size.usizes()?,
                    stride: stride.usizes()?,
                };
                if tensor.shape.len() != tensor.stride.len() {
                    return Err(malformed("a tensor whose size and stride differ in length"));
                }
                Ok(Value::Tensor(tensor))
            }
            _ => Err(malformed(
                "_rebuild_tensor_v2 without a storage, offset, size and stride",
            )),
        },
        other => Err(malformed(format!("a call of {other:?}"))),
    }
}
