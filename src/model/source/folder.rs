//! A Hugging Face model folder: `config.json`, the weights in one `model.safetensors` or in
//! shards listed by `model.safetensors.index.json`, and usually `tokenizer.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{file_bytes, raw_from_bytes, DType, TensorData, TensorSource};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// The weight files of a folder, read as one source with their own names.
struct Folder {
    shards: Vec<Box<dyn TensorSource>>,
    /// Tensor name → index into `shards`.
    owner: HashMap<String, usize>,
    names: Vec<String>,
    dir: PathBuf,
}

/// Opens the weights of the folder `dir`.
pub fn open(dir: &Path) -> Result<Box<dyn TensorSource>> {
    let shown = dir.display().to_string();
    let index = read_index(dir)?;
    let files = weight_files(dir, index.as_ref())?;
    let mut shards = Vec::new();
    let mut owner = HashMap::new();
    let mut names = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let shard = raw_from_bytes(file.display().to_string(), file_bytes(file)?)?;
        for name in shard.names() {
            if let Some(other) = owner.insert(name.clone(), index) {
                return Err(Error::malformed(
                    &shown,
                    format!("tensor `{name}` is in both {} and {}", files[other].display(), file.display()),
                ));
            }
            names.push(name);
        }
        shards.push(shard);
    }
    let folder = Folder { shards, owner, names, dir: dir.to_path_buf() };
    if let Some(index) = index {
        for (name, file) in index {
            let holder = folder.owner.get(&name).and_then(|&i| files[i].file_name());
            if holder != Some(std::ffi::OsStr::new(&file)) {
                return Err(Error::malformed(
                    &shown,
                    format!("model.safetensors.index.json puts `{name}` in {file}, which does not hold it"),
                ));
            }
        }
    }
    Ok(Box::new(folder))
}

/// The weight files: the shards the index names, else the folder's single weights file.
fn weight_files(dir: &Path, index: Option<&HashMap<String, String>>) -> Result<Vec<PathBuf>> {
    let shown = dir.display().to_string();
    if let Some(index) = index {
        let mut files: Vec<&String> = index.values().collect();
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|file| dir.join(file)).collect());
    }
    if dir.join("model.safetensors").is_file() {
        return Ok(vec![dir.join("model.safetensors")]);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut candidates: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            ["safetensors", "pth", "gguf"].contains(&extension)
        })
        .collect();
    candidates.sort();
    match &candidates[..] {
        [one] => Ok(vec![one.clone()]),
        [] => Err(Error::malformed(
            shown,
            "a folder without model weights: expected model.safetensors, shards listed by \
             model.safetensors.index.json, or one .safetensors, .pth or .gguf file",
        )),
        several => Err(Error::malformed(
            shown,
            format!(
                "a folder with {} weight files and no model.safetensors.index.json to say how they go together; pass one file",
                several.len()
            ),
        )),
    }
}

/// `model.safetensors.index.json`'s `weight_map` (tensor name → shard file), if the folder has one.
fn read_index(dir: &Path) -> Result<Option<HashMap<String, String>>> {
    let path = dir.join("model.safetensors.index.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let shown = path.display().to_string();
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::malformed(&shown, format!("not JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(|map| map.as_object())
        .ok_or_else(|| Error::malformed(&shown, "no `weight_map` object"))?;
    let mut out = HashMap::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| Error::malformed(&shown, format!("`{name}` maps to no file name")))?;
        if file.contains(['/', '\\']) || file.starts_with('.') {
            return Err(Error::malformed(&shown, format!("`{name}` maps to `{file}`, outside the folder")));
        }
        out.insert(name.clone(), file.to_string());
    }
    Ok(Some(out))
}

impl TensorSource for Folder {
    fn format(&self) -> &'static str {
        self.shards.first().map_or("safetensors", |shard| shard.format())
    }

    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn meta(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        self.shards[*self.owner.get(name)?].meta(name)
    }

    fn tensor(&self, name: &str) -> Result<TensorData<'_>> {
        match self.owner.get(name) {
            Some(&index) => self.shards[index].tensor(name),
            None => Err(Error::MissingTensor { name: name.into(), hint: String::new() }),
        }
    }

    fn stored_type(&self, name: &str) -> Option<String> {
        self.shards[*self.owner.get(name)?].stored_type(name)
    }

    /// `tokenizer.json`, or the World vocabulary file that fla-hub's World models ship.
    fn tokenizer(&self) -> Option<Result<Tokenizer>> {
        ["tokenizer.json", "rwkv_vocab_v20230424.txt"]
            .iter()
            .map(|file| self.dir.join(file))
            .find(|path| path.exists())
            .map(|path| Tokenizer::from_file(&path))
    }
}
