//! What `torch.save` means by the few classes its pickles may name: storage types in persistent
//! ids, `_rebuild_tensor_v2` calls that view those storages, and the dict that names the tensors.

use std::collections::{HashMap, HashSet};

use super::{clip, Machine, Object, Value};
use crate::model::source::DType;

/// Model weights have at most a handful of dimensions; the cap keeps a tiny pickle that repeats
/// one huge shape tuple from costing much more memory than its own size.
const MAX_DIMS: usize = 16;

/// An element type, as named by the `torch.XStorage` class in a persistent id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::model::source) struct Element {
    pub dtype: DType,
    pub size: usize,
}

/// One `('storage', torch.XStorage, key, location, numel)` persistent id.
#[derive(Debug, Clone)]
pub(in crate::model::source) struct StorageRef {
    pub key: String,
    pub element: Element,
    pub numel: usize,
}

/// One `_rebuild_tensor_v2` call: a view (in elements) into `TensorDict::storages[storage]`.
#[derive(Debug, Clone)]
pub(in crate::model::source) struct TensorRef {
    pub storage: usize,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// What `data.pkl` holds. Storages and tensors appear once each however many names share them.
#[derive(Debug, Default)]
pub(in crate::model::source) struct TensorDict {
    pub storages: Vec<StorageRef>,
    pub tensors: Vec<TensorRef>,
    /// Tensor names, in the order they were saved, with their index into `tensors`.
    pub names: Vec<(String, usize)>,
}

/// Reads `data.pkl`. Errors are complete reasons starting with "data.pkl".
pub(in crate::model::source) fn read_tensor_dict(pickle: &[u8]) -> Result<TensorDict, String> {
    let mut machine = Machine::new(pickle);
    let root = machine.run()?;
    machine.tensor_dict(root)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Global {
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
    OrderedDict,
    GetLayout,
    Strided,
    Storage(Element),
}

const fn storage(dtype: DType, size: usize) -> Global {
    Global::Storage(Element { dtype, size })
}

const ALLOWED_GLOBALS: &[(&str, &str, Global)] = &[
    ("torch._utils", "_rebuild_tensor_v2", Global::RebuildTensorV2),
    ("torch._utils", "_rebuild_tensor", Global::RebuildTensor),
    ("torch._utils", "_rebuild_parameter", Global::RebuildParameter),
    ("torch._utils", "_rebuild_parameter_with_state", Global::RebuildParameter),
    ("collections", "OrderedDict", Global::OrderedDict),
    ("torch.serialization", "_get_layout", Global::GetLayout),
    ("torch", "strided", Global::Strided),
    ("torch", "BFloat16Storage", storage(DType::BF16, 2)),
    ("torch", "HalfStorage", storage(DType::F16, 2)),
    ("torch", "FloatStorage", storage(DType::F32, 4)),
    ("torch", "DoubleStorage", storage(DType::Other("f64"), 8)),
    ("torch", "LongStorage", storage(DType::Other("i64"), 8)),
    ("torch", "IntStorage", storage(DType::Other("i32"), 4)),
    ("torch", "ShortStorage", storage(DType::Other("i16"), 2)),
    ("torch", "CharStorage", storage(DType::Other("i8"), 1)),
    ("torch", "ByteStorage", storage(DType::Other("u8"), 1)),
    ("torch", "BoolStorage", storage(DType::Other("bool"), 1)),
];

pub(super) fn global_name(global: Global) -> String {
    ALLOWED_GLOBALS
        .iter()
        .find(|(_, _, g)| *g == global)
        .map_or_else(|| format!("{global:?}"), |(module, name, _)| format!("{module}.{name}"))
}

/// Python classes are looked up by name only in this fixed list; nothing else can be named.
pub(super) fn resolve_global(module: &str, name: &str) -> Result<Global, String> {
    ALLOWED_GLOBALS.iter().find(|(m, n, _)| *m == module && *n == name).map(|(_, _, g)| *g).ok_or_else(|| {
        format!(
            "references unknown class `{}.{}`; only torch tensor and storage classes are allowed",
            clip(module),
            clip(name)
        )
    })
}

impl Machine<'_> {
    /// BINPERSID: torch refers to each storage by a `('storage', torch.XStorage, key, location,
    /// numel)` tuple whose bytes are the zip entry `data/<key>`.
    pub(super) fn persistent_storage(&self, pid: Value) -> Result<Object, String> {
        let not_a_storage_id = || {
            "has a persistent id that is not ('storage', torch.XStorage, key, location, numel)".to_string()
        };
        let &[tag, class, key, _location, numel] = self.tuple(pid).ok_or_else(not_a_storage_id)? else {
            return Err(not_a_storage_id());
        };
        if self.str(tag) != Some("storage") {
            return Err(not_a_storage_id());
        }
        let Some(&Object::Global(Global::Storage(element))) = self.get(class) else {
            return Err(format!(
                "has a persistent id naming {}, not a torch storage class",
                self.kind(class)
            ));
        };
        let (Value::Obj(key), Some(_)) = (key, self.str(key)) else {
            return Err(format!("has a storage key that is {}, not a string", self.kind(key)));
        };
        let numel = self.non_negative(numel, "a storage's element count")?;
        Ok(Object::Storage { key, element, numel })
    }

    pub(super) fn reduce(&mut self, callable: Value, args: Value) -> Result<Value, String> {
        let Some(&Object::Global(global)) = self.get(callable) else {
            return Err(format!("calls {}, which is not a function", self.kind(callable)));
        };
        let Some(all_args) = self.tuple(args) else {
            let kind = self.kind(args);
            return Err(format!("calls `{}` with {kind} instead of an argument tuple", global_name(global)));
        };
        // Only the first few arguments matter; copying just those keeps a pickle that calls
        // with one huge memoized tuple over and over from costing quadratic time.
        let count = all_args.len();
        let args: Vec<Value> = all_args.iter().take(7).copied().collect();
        match (global, args.as_slice()) {
            (Global::OrderedDict, []) => self.new_obj(Object::Dict(Vec::new())),
            (Global::RebuildTensorV2, [storage, offset, size, stride, _, _, ..]) if count <= 7 => {
                self.rebuild_tensor(*storage, *offset, *size, *stride)
            }
            (Global::RebuildTensor, &[storage, offset, size, stride]) => {
                self.rebuild_tensor(storage, offset, size, stride)
            }
            // A Parameter is a tensor with autograd flags, which inference ignores.
            (Global::RebuildParameter, &[data, _, _, ..]) if self.is_tensor(data) => Ok(data),
            (Global::GetLayout, _) => self.new_obj(Object::Layout),
            _ => Err(format!(
                "calls `{}` with {count} arguments in a way torch.save never writes",
                global_name(global)
            )),
        }
    }

    fn rebuild_tensor(
        &mut self,
        storage: Value,
        offset: Value,
        size: Value,
        stride: Value,
    ) -> Result<Value, String> {
        let (Value::Obj(storage), Some(Object::Storage { .. })) = (storage, self.get(storage)) else {
            return Err(format!("rebuilds a tensor from {}, not a storage", self.kind(storage)));
        };
        let offset = self.non_negative(offset, "a tensor's storage offset")?;
        let shape = self.dims(size, "size")?;
        let stride = self.dims(stride, "stride")?;
        if shape.len() != stride.len() {
            return Err(format!("rebuilds a tensor with {} sizes but {} strides", shape.len(), stride.len()));
        }
        self.new_obj(Object::Tensor { storage, offset, shape, stride })
    }

    /// BUILD sets attributes; the only ones torch writes on what a state dict holds (an
    /// OrderedDict's `_metadata`, a tensor subclass's `__dict__`) say nothing about the weights.
    pub(super) fn build(&mut self, _state: Value) -> Result<(), String> {
        let target = self.peek()?;
        match self.get(target) {
            Some(Object::Dict(_) | Object::Tensor { .. }) => Ok(()),
            _ => Err(format!("applies BUILD to {}", self.kind(target))),
        }
    }

    fn is_tensor(&self, value: Value) -> bool {
        matches!(self.get(value), Some(Object::Tensor { .. }))
    }

    fn non_negative(&self, value: Value, what: &str) -> Result<usize, String> {
        match value {
            Value::Int(int) => usize::try_from(int).map_err(|_| format!("has {what} of {int}")),
            _ => Err(format!("has {what} that is {}, not an integer", self.kind(value))),
        }
    }

    fn dims(&self, value: Value, what: &str) -> Result<Vec<usize>, String> {
        let Some(items) = self.tuple(value) else {
            return Err(format!("rebuilds a tensor whose {what} is {}, not a tuple", self.kind(value)));
        };
        if items.len() > MAX_DIMS {
            return Err(format!(
                "rebuilds a tensor with {} dimensions; at most {MAX_DIMS} are supported",
                items.len()
            ));
        }
        items.iter().map(|&item| self.non_negative(item, &format!("a tensor {what}"))).collect()
    }

    /// The tensors of the unpickled object: a dict of name → tensor, or such a dict under
    /// `state_dict` or `model` when the top-level dict holds no tensors itself (training
    /// checkpoints). Values that are not tensors (step counts, configs) are skipped.
    fn tensor_dict(&self, root: Value) -> Result<TensorDict, String> {
        let Some(Object::Dict(top)) = self.get(root) else {
            return Err(format!("data.pkl holds {}, not a dict of tensors", self.kind(root)));
        };
        let entries = if top.iter().any(|&(_, value)| self.is_tensor(value)) {
            top.as_slice()
        } else {
            self.nested_state_dict(top).unwrap_or(top)
        };
        let mut dict = TensorDict::default();
        let mut names = HashSet::new();
        let mut slots = Slots::default();
        for &(key, value) in entries {
            let (Value::Obj(object), true) = (value, self.is_tensor(value)) else {
                continue;
            };
            let name = self
                .str(key)
                .ok_or_else(|| format!("data.pkl names a tensor with {}, not a string", self.kind(key)))?;
            if !names.insert(name) {
                return Err(format!("data.pkl holds two tensors named `{}`", clip(name)));
            }
            let tensor = match slots.tensors.get(&object) {
                Some(&slot) => slot,
                None => self.add_tensor(object, &mut dict, &mut slots)?,
            };
            dict.names.push((name.to_owned(), tensor));
        }
        if dict.names.is_empty() {
            return Err("data.pkl holds no tensors".into());
        }
        Ok(dict)
    }

    fn nested_state_dict<'s>(&'s self, top: &'s [(Value, Value)]) -> Option<&'s [(Value, Value)]> {
        ["state_dict", "model"].into_iter().find_map(|wanted| {
            let &(_, value) = top.iter().find(|&&(key, _)| self.str(key) == Some(wanted))?;
            match self.get(value) {
                Some(Object::Dict(inner)) => Some(inner.as_slice()),
                _ => None,
            }
        })
    }

    fn add_tensor<'s>(
        &'s self,
        object: usize,
        dict: &mut TensorDict,
        slots: &mut Slots<'s>,
    ) -> Result<usize, String> {
        let Some(Object::Tensor { storage, offset, shape, stride }) = self.objects.get(object) else {
            return Err("data.pkl lost track of a tensor".into());
        };
        let Some(&Object::Storage { key, element, numel }) = self.objects.get(*storage) else {
            return Err("data.pkl lost track of a storage".into());
        };
        let storage = match slots.storage_by_key_object.get(&key) {
            Some(&slot) => slot,
            None => {
                let Some(Object::Str(name)) = self.objects.get(key) else {
                    return Err("data.pkl lost track of a storage key".into());
                };
                let slot = *slots.storage_by_key.entry(name).or_insert(dict.storages.len());
                if slot == dict.storages.len() {
                    dict.storages.push(StorageRef { key: name.clone(), element, numel });
                }
                slots.storage_by_key_object.insert(key, slot);
                slot
            }
        };
        if let Some(first) = dict.storages.get(storage) {
            if first.element != element || first.numel != numel {
                return Err(format!(
                    "data.pkl describes storage `{}` both as {} {}s and as {numel} {}s",
                    clip(&first.key),
                    first.numel,
                    first.element.dtype,
                    element.dtype
                ));
            }
        }
        dict.tensors.push(TensorRef {
            storage,
            offset: *offset,
            shape: shape.clone(),
            stride: stride.clone(),
        });
        let slot = dict.tensors.len() - 1;
        slots.tensors.insert(object, slot);
        Ok(slot)
    }
}

/// Where each arena object already went in the output. Storages are found by key object before
/// key text, so a pickle that repeats one huge key hashes it once rather than once per use.
#[derive(Default)]
struct Slots<'s> {
    tensors: HashMap<usize, usize>,
    storage_by_key_object: HashMap<usize, usize>,
    storage_by_key: HashMap<&'s str, usize>,
}
