//! A safe interpreter for the subset of Python's pickle format that `torch.save` writes.
//!
//! Nothing is ever executed: a pickle may only name the classes that [`torch`] allows, and each
//! is interpreted as data. Objects live in one arena and refer to each other by index, so a memo
//! lookup copies an index rather than a tree, cyclic input is harmless, and dropping deeply
//! nested input cannot overflow the stack. Every opcode consumes input and does work bounded by
//! what it consumes or by a fixed constant, so hostile input cannot make the reader hang.

mod torch;

use std::collections::HashMap;

use self::torch::{global_name, resolve_global, Global};
pub(super) use self::torch::{read_tensor_dict, Element, StorageRef, TensorDict, TensorRef};

/// Far above what a state dict needs (Python's pickler batches SETITEMS by 1000 pairs), far
/// below anything that strains memory.
const MAX_STACK: usize = 1 << 20;
const MAX_MARKS: usize = 1 << 16;
const MAX_MEMO: usize = 1 << 21;
/// A state dict needs about a dozen objects per tensor; the cap bounds memory at a few hundred
/// MB whatever the input, since each object costs up to ~100 bytes for one byte of pickle.
const MAX_OBJECTS: usize = 1 << 21;

/// A stack or memo slot. Compound values live in the arena, so copying a `Value` is O(1).
#[derive(Debug, Clone, Copy)]
enum Value {
    None,
    /// Bools and floats only appear as flags a state dict ignores (`requires_grad`), so only
    /// their presence is kept.
    Bool,
    Int(i64),
    Float,
    Obj(usize),
}

#[derive(Debug)]
enum Object {
    Str(String),
    Bytes,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    /// `key` is the index of a `Str` object: indices rather than copies keep a pickle that
    /// repeats one huge key from multiplying it.
    Storage {
        key: usize,
        element: Element,
        numel: usize,
    },
    Tensor {
        storage: usize,
        offset: usize,
        shape: Vec<usize>,
        stride: Vec<usize>,
    },
    Layout,
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack heights at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objects: Vec<Object>,
}

impl<'a> Machine<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            objects: Vec::new(),
        }
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let opcode = self.byte().map_err(|_| "data.pkl ends without a STOP opcode".to_string())?;
            if opcode == b'.' {
                return self.pop().map_err(|e| format!("data.pkl {e}, at byte {at}"));
            }
            self.step(opcode).map_err(|e| format!("data.pkl {e}, at byte {at}"))?;
        }
    }

    fn step(&mut self, opcode: u8) -> Result<(), String> {
        match opcode {
            0x80 => {
                let version = self.byte()?;
                if version > 5 {
                    return Err(format!("uses pickle protocol {version}; only protocols up to 5 exist"));
                }
            }
            // FRAME: the length is only a read-ahead hint, so the frame's opcodes are read as usual.
            0x95 => {
                self.take(8)?;
            }
            b'(' => {
                if self.marks.len() >= MAX_MARKS {
                    return Err(format!("nests more than {MAX_MARKS} MARKs"));
                }
                self.marks.push(self.stack.len());
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => self.push(self.peek()?)?,
            b'N' => self.push(Value::None)?,
            0x88 | 0x89 => self.push(Value::Bool)?,
            b'J' | b'K' | b'M' => {
                let int = match opcode {
                    b'J' => i32::from_le_bytes(self.array()?).into(),
                    b'K' => self.byte()?.into(),
                    _ => u16::from_le_bytes(self.array()?).into(),
                };
                self.push(Value::Int(int))?;
            }
            0x8a => {
                let len = self.byte()?;
                self.push_long(len.into())?;
            }
            0x8b => {
                let len = u32::from_le_bytes(self.array()?);
                self.push_long(len.into())?;
            }
            b'G' => {
                self.take(8)?;
                self.push(Value::Float)?;
            }
            // Strings and bytes differ only in the width of their length prefix.
            0x8c | b'X' | 0x8d | b'C' | b'B' | 0x8e => {
                let len = match opcode {
                    0x8c | b'C' => self.byte()?.into(),
                    b'X' | b'B' => u32::from_le_bytes(self.array()?).into(),
                    _ => u64::from_le_bytes(self.array()?),
                };
                let bytes = self.take_u64(len)?;
                if matches!(opcode, 0x8c | b'X' | 0x8d) {
                    let text = std::str::from_utf8(bytes).map_err(|_| "has a string that is not UTF-8")?;
                    self.push_obj(Object::Str(text.to_owned()))?;
                } else {
                    // Bytes never matter for a state dict; only their presence is kept.
                    self.push_obj(Object::Bytes)?;
                }
            }
            b'}' => self.push_obj(Object::Dict(Vec::new()))?,
            b']' => self.push_obj(Object::List(Vec::new()))?,
            b')' => self.push_obj(Object::Tuple(Vec::new()))?,
            b't' => {
                let items = self.pop_mark()?;
                self.push_obj(Object::Tuple(items))?;
            }
            0x85..=0x87 => {
                let len = usize::from(opcode - 0x84);
                let items = self.pop_n(len)?;
                self.push_obj(Object::Tuple(items))?;
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push_obj(Object::List(items))?;
            }
            b'd' => {
                let pairs = pairs(self.pop_mark()?)?;
                self.push_obj(Object::Dict(pairs))?;
            }
            b'q' => {
                let key = self.byte()?;
                self.memo_put(key.into())?;
            }
            b'r' => {
                let key = u32::from_le_bytes(self.array()?);
                self.memo_put(key)?;
            }
            0x94 => {
                let key = u32::try_from(self.memo.len()).map_err(|_| "has too many memo entries")?;
                self.memo_put(key)?;
            }
            b'h' => {
                let key = self.byte()?;
                self.memo_get(key.into())?;
            }
            b'j' => {
                let key = u32::from_le_bytes(self.array()?);
                self.memo_get(key)?;
            }
            b'a' => {
                let item = self.pop()?;
                self.extend_list(vec![item])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.extend_list(items)?;
            }
            b's' => {
                let items = self.pop_n(2)?;
                self.extend_dict(pairs(items)?)?;
            }
            b'u' => {
                let pairs = pairs(self.pop_mark()?)?;
                self.extend_dict(pairs)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let global = resolve_global(module, name)?;
                self.push_obj(Object::Global(global))?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(module), Some(name)) = (self.str(module), self.str(name)) else {
                    return Err("uses STACK_GLOBAL on something other than two strings".into());
                };
                let global = resolve_global(module, name)?;
                self.push_obj(Object::Global(global))?;
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.persistent_storage(pid)?;
                self.push_obj(storage)?;
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let result = self.reduce(callable, args)?;
                self.push(result)?;
            }
            b'b' => {
                let state = self.pop()?;
                self.build(state)?;
            }
            _ => {
                let name = unsupported_opcode_name(opcode);
                return Err(format!("uses unsupported pickle opcode {opcode:#04x} ({name})"));
            }
        }
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| "ends in the middle of an opcode".to_string())
    }

    /// The next `len` input bytes; the length is checked against the input before anything is
    /// allocated for it.
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let input = self.input;
        let end = self.pos.checked_add(len).filter(|&end| end <= input.len());
        let bytes = end.and_then(|end| input.get(self.pos..end)).ok_or_else(|| {
            let left = input.len().saturating_sub(self.pos);
            format!("ends in the middle of an opcode: it needs {len} more bytes, only {left} remain")
        })?;
        self.pos += bytes.len();
        Ok(bytes)
    }

    fn take_u64(&mut self, len: u64) -> Result<&'a [u8], String> {
        self.take(usize::try_from(len).unwrap_or(usize::MAX))
    }

    fn line(&mut self) -> Result<&'a str, String> {
        let rest = self.input.get(self.pos..).unwrap_or_default();
        let len = rest.iter().position(|&b| b == b'\n').ok_or("ends inside a GLOBAL name")?;
        let line = self.take(len)?;
        self.take(1)?;
        std::str::from_utf8(line).map_err(|_| "has a GLOBAL name that is not UTF-8".to_string())
    }

    fn push(&mut self, value: Value) -> Result<(), String> {
        if self.stack.len() >= MAX_STACK {
            return Err(format!("grows its stack beyond {MAX_STACK} entries"));
        }
        self.stack.push(value);
        Ok(())
    }

    fn new_obj(&mut self, object: Object) -> Result<Value, String> {
        if self.objects.len() >= MAX_OBJECTS {
            return Err(format!("creates more than {MAX_OBJECTS} objects"));
        }
        self.objects.push(object);
        Ok(Value::Obj(self.objects.len() - 1))
    }

    fn push_obj(&mut self, object: Object) -> Result<(), String> {
        let value = self.new_obj(object)?;
        self.push(value)
    }

    /// LONG1/LONG4: little-endian two's complement of any width; only 64 bits are meaningful
    /// for sizes and offsets.
    fn push_long(&mut self, len: u64) -> Result<(), String> {
        let bytes = self.take_u64(len)?;
        if bytes.len() > 8 {
            return Err(format!("has a {}-byte integer; only 64-bit integers are supported", bytes.len()));
        }
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let mut buf = if negative { [0xff; 8] } else { [0; 8] };
        buf.iter_mut().zip(bytes).for_each(|(dst, src)| *dst = *src);
        self.push(Value::Int(i64::from_le_bytes(buf)))
    }

    /// The lowest stack height the current MARK lets opcodes reach.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Value, String> {
        if self.stack.len() <= self.floor() {
            return Err("pops from an empty stack".into());
        }
        self.stack.pop().ok_or_else(|| "pops from an empty stack".into())
    }

    fn peek(&self) -> Result<Value, String> {
        match self.stack.last() {
            Some(&value) if self.stack.len() > self.floor() => Ok(value),
            _ => Err("reads the top of an empty stack".into()),
        }
    }

    fn pop_n(&mut self, count: usize) -> Result<Vec<Value>, String> {
        let start = self.stack.len().checked_sub(count).filter(|&start| start >= self.floor());
        let start = start.ok_or_else(|| format!("needs {count} stack entries but has fewer"))?;
        Ok(self.stack.split_off(start))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or("closes a MARK that was never opened")?;
        if mark > self.stack.len() {
            return Err("closes a MARK below the stack".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, key: u32) -> Result<(), String> {
        let value = self.peek()?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
            return Err(format!("memoizes more than {MAX_MEMO} objects"));
        }
        self.memo.insert(key, value);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), String> {
        let value = self
            .memo
            .get(&key)
            .copied()
            .ok_or_else(|| format!("reads memo entry {key} before writing it"))?;
        self.push(value)
    }

    fn extend_list(&mut self, items: Vec<Value>) -> Result<(), String> {
        let target = self.peek()?;
        let kind = self.kind(target);
        match self.get_mut(target) {
            Some(Object::List(list)) => {
                list.extend(items);
                Ok(())
            }
            _ => Err(format!("appends to {kind}, not a list")),
        }
    }

    fn extend_dict(&mut self, pairs: Vec<(Value, Value)>) -> Result<(), String> {
        let target = self.peek()?;
        let kind = self.kind(target);
        match self.get_mut(target) {
            Some(Object::Dict(dict)) => {
                dict.extend(pairs);
                Ok(())
            }
            _ => Err(format!("sets items on {kind}, not a dict")),
        }
    }

    fn get(&self, value: Value) -> Option<&Object> {
        match value {
            Value::Obj(index) => self.objects.get(index),
            _ => None,
        }
    }

    fn get_mut(&mut self, value: Value) -> Option<&mut Object> {
        match value {
            Value::Obj(index) => self.objects.get_mut(index),
            _ => None,
        }
    }

    fn str(&self, value: Value) -> Option<&str> {
        match self.get(value) {
            Some(Object::Str(text)) => Some(text),
            _ => None,
        }
    }

    fn tuple(&self, value: Value) -> Option<&[Value]> {
        match self.get(value) {
            Some(Object::Tuple(items) | Object::List(items)) => Some(items),
            _ => None,
        }
    }

    fn kind(&self, value: Value) -> String {
        let kind = match value {
            Value::None => "None",
            Value::Bool => "a bool",
            Value::Int(_) => "an int",
            Value::Float => "a float",
            Value::Obj(_) => match self.get(value) {
                Some(Object::Str(_)) => "a string",
                Some(Object::Bytes) => "bytes",
                Some(Object::Tuple(_)) => "a tuple",
                Some(Object::List(_)) => "a list",
                Some(Object::Dict(_)) => "a dict",
                Some(Object::Global(global)) => return format!("`{}`", global_name(*global)),
                Some(Object::Storage { .. }) => "a storage",
                Some(Object::Tensor { .. }) => "a tensor",
                Some(Object::Layout) => "a layout",
                None => "a missing object",
            },
        };
        kind.to_string()
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if items.len() % 2 != 0 {
        return Err(format!("sets dict items from an odd number ({}) of keys and values", items.len()));
    }
    let mut items = items.into_iter();
    let mut pairs = Vec::with_capacity(items.len() / 2);
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Names from hostile input can be megabytes long; error messages show only their start.
pub(super) fn clip(text: &str) -> String {
    const SHOWN: usize = 80;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or_default()),
        None => text.to_string(),
    }
}

fn unsupported_opcode_name(opcode: u8) -> &'static str {
    match opcode {
        b'F' => "FLOAT",
        b'I' => "INT",
        b'L' => "LONG",
        b'P' => "PERSID",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'g' => "GET",
        b'i' => "INST",
        b'o' => "OBJ",
        b'p' => "PUT",
        0x81 => "NEWOBJ",
        0x82..=0x84 => "EXT",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "not a pickle opcode",
    }
}
