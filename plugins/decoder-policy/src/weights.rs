//! Safetensors weights: single-file or sharded (`model.safetensors.index.json`), f32, bf16 or
//! f16, read tensor by tensor into the model's own storage so a model never needs twice its
//! size in RAM; and saving in the layout transformers loads.

use crate::error::{invalid, io, PolicyError, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Device, Kind, Tensor};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// The weight files of a model directory, shards in index order. With both a single file
/// and an index, the single file, as transformers reads them: `save_pretrained` over an
/// earlier sharded save leaves the old index beside the new file (and its shards deleted).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(SINGLE_FILE);
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join(SHARD_INDEX);
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(io(&index))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| invalid(&index, e))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| invalid(&index, "no `weight_map` object"))?;
        let files: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let pickled = ["pytorch_model.bin", "pytorch_model.bin.index.json"]
        .into_iter()
        .find(|name| dir.join(name).exists());
    Err(invalid(
        dir,
        match pickled {
            Some(name) => format!(
                "no {SINGLE_FILE} or {SHARD_INDEX}: it holds {name}, a pickle crpo does not read; re-save the model with transformers' save_pretrained(dir, safe_serialization=True)"
            ),
            None => format!("no {SINGLE_FILE} or {SHARD_INDEX}"),
        },
    ))
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::BF16 => Some(Kind::BFloat16),
        Dtype::F16 => Some(Kind::Half),
        _ => None,
    }
}

/// Fills every variable of `vs` from the weight files of `dir`, converting dtype and device.
/// Tensors the model does not use (e.g. a tied `lm_head.weight`) are ignored; a variable with
/// no tensor is an error naming it.
///
/// Each tensor is read (`pread`) straight into its variable when that is a contiguous CPU
/// tensor of the file's dtype, else into a scratch tensor of its own size that `copy_`
/// converts. The file itself is only mapped to parse its header: copying out of a mapping
/// of the whole file kept every page read resident, so loading held the weights twice.
///
/// Returns the tensors the model has no place for (sorted), for the caller to report as
/// transformers does; a rotary table some old checkpoints keep is not counted.
pub fn load(vs: &mut VarStore, dir: &Path) -> Result<Vec<String>> {
    let mut unused = Vec::new();
    let mut wanted: HashMap<String, Tensor> = vs.variables();
    let model_layers: std::collections::BTreeSet<usize> =
        wanted.keys().filter_map(|name| layer_of(name)).collect();
    // A tied model's head is its embedding: a head stored beside it is read to check so.
    let embedding = (!wanted.contains_key(HEAD))
        .then(|| wanted.get(EMBEDDING).map(Tensor::shallow_clone))
        .flatten();
    let mut stored_head: Option<(Tensor, PathBuf)> = None;
    let files = weight_files(dir)?;
    for file in &files {
        let file = file.clone();
        let handle = std::fs::File::open(&file).map_err(io(&file))?;
        // SAFETY: the file is only read; a concurrent writer could change what we read, as
        // with any reader, but cannot cause undefined behaviour beyond wrong values.
        let mmap = unsafe { memmap2::Mmap::map(&handle) }.map_err(io(&file))?;
        // Only the header's pages are touched.
        let (header, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| not_safetensors(&file, e))?;
        // Tensor offsets count from the end of the header and its 8-byte length.
        let data_start = (8 + header) as u64;
        for (name, info) in metadata.tensors() {
            if name == HEAD && embedding.is_some() {
                let found: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
                if let Some(kind) = kind_of(info.dtype) {
                    let head = Tensor::f_empty(found.as_slice(), (kind, Device::Cpu))?;
                    read_into(&handle, data_start + info.data_offsets.0 as u64, &head).map_err(io(&file))?;
                    stored_head = Some((head, file.clone()));
                }
                continue;
            }
            let Some(mut var) = wanted.remove(&name) else {
                // Tensors the model has no place for are passed over, as transformers does
                // (e.g. old checkpoints' `rotary_emb.inv_freq`), but a whole decoder layer
                // beyond config.json's is weights and config that do not belong together.
                if let Some(layer) = layer_of(&name).filter(|layer| !model_layers.contains(layer)) {
                    return Err(PolicyError::Invalid {
                        path: file,
                        message: format!(
                            "holds tensor `{name}` of decoder layer {layer}, but config.json's num_hidden_layers = {} gives the model no such layer: config.json does not describe these weights",
                            model_layers.len()
                        ),
                    });
                }
                if !name.ends_with("rotary_emb.inv_freq") {
                    unused.push(name);
                }
                continue;
            };
            let found: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
            if found != var.size() {
                return Err(PolicyError::Shape {
                    name,
                    file,
                    expected: var.size(),
                    found,
                });
            }
            let kind = kind_of(info.dtype).ok_or_else(|| PolicyError::Dtype {
                name: name.clone(),
                file: file.clone(),
                dtype: format!("{:?}", info.dtype),
            })?;
            let offset = data_start + info.data_offsets.0 as u64;
            let in_place = var.device() == Device::Cpu && var.kind() == kind && var.is_contiguous();
            if in_place {
                read_into(&handle, offset, &var).map_err(io(&file))?;
            } else {
                let scratch = Tensor::f_empty(found.as_slice(), (kind, Device::Cpu))?;
                read_into(&handle, offset, &scratch).map_err(io(&file))?;
                tch::no_grad(|| var.f_copy_(&scratch))?;
            }
        }
    }
    let mut missing: Vec<String> = wanted.into_keys().collect();
    missing.sort();
    if let Some(name) = missing.into_iter().next() {
        let from = match files.as_slice() {
            [one] => one.display().to_string(),
            shards => format!(
                "the {} shards {} lists",
                shards.len(),
                dir.join(SHARD_INDEX).display()
            ),
        };
        return Err(PolicyError::MissingTensor { name, from });
    }
    if let (Some(embedding), Some((head, file))) = (embedding, stored_head) {
        let same = head.size() == embedding.size()
            && head
                .f_to_kind(embedding.kind())?
                .equal(&embedding.to_device(Device::Cpu));
        if !same {
            return Err(PolicyError::Invalid {
                path: file,
                message: format!(
                    "holds an `{HEAD}` that differs from `{EMBEDDING}`, but config.json's tie_word_embeddings = true makes the head the embedding (transformers 5 would use the stored head, transformers 4 the embedding): set tie_word_embeddings to how the model was trained (false keeps this head)"
                ),
            });
        }
    }
    unused.sort();
    Ok(unused)
}

const HEAD: &str = "lm_head.weight";
const EMBEDDING: &str = "model.embed_tokens.weight";

/// The decoder layer a tensor name belongs to (`model.layers.N.…`).
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// A weight file whose header cannot be read: the safetensors library's words ("incomplete
/// metadata, file not fully covered") do not say that the file is cut short or damaged.
fn not_safetensors(file: &Path, error: safetensors::SafeTensorError) -> PolicyError {
    invalid(
        file,
        format!("not a complete safetensors file (cut short by a copy or download that stopped, or damaged): {error}"),
    )
}

/// Elements of every tensor the directory's weight files hold, from their headers alone.
pub fn stored_elements(dir: &Path) -> Result<u128> {
    let mut total = 0u128;
    for file in weight_files(dir)? {
        let handle = std::fs::File::open(&file).map_err(io(&file))?;
        // SAFETY: as in `load`: only the header's pages are read.
        let mmap = unsafe { memmap2::Mmap::map(&handle) }.map_err(io(&file))?;
        let (_, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| not_safetensors(&file, e))?;
        for (_, info) in metadata.tensors() {
            let elements = info.shape.iter().fold(1u128, |n, &d| n.saturating_mul(d as u128));
            total = total.saturating_add(elements);
        }
    }
    Ok(total)
}

/// Fills `tensor` (contiguous, on the CPU) with the bytes of `file` at `offset`: safetensors
/// stores little-endian values, the layout of the CPUs libtorch runs on.
fn read_into(file: &std::fs::File, offset: u64, tensor: &Tensor) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    debug_assert!(tensor.device() == Device::Cpu && tensor.is_contiguous());
    let bytes = tensor.numel() * tensor.kind().elt_size_in_bytes();
    if bytes == 0 {
        return Ok(());
    }
    // SAFETY: a contiguous CPU tensor's elements are `bytes` bytes from `data_ptr`, and
    // nothing reads or writes them while a tensor being loaded is filled.
    let storage = unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr().cast::<u8>(), bytes) };
    file.read_exact_at(storage, offset)
}

/// Writes every variable to `dir/model.safetensors` with the `format: pt` metadata that
/// transformers requires.
pub fn save(vs: &VarStore, dir: &Path) -> Result<()> {
    let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    save_tensors(&named, &dir.join(SINGLE_FILE))
}

/// Writes `named` tensors (sorted by name) to the safetensors file `path`, as transformers
/// reads them (`format: pt`).
pub fn save_tensors(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    let mut named: Vec<&(String, Tensor)> = named.iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut owned = Vec::with_capacity(named.len());
    for (name, tensor) in named {
        let tensor = tensor.to_device(tch::Device::Cpu).contiguous();
        let dtype = match tensor.kind() {
            Kind::Float => Dtype::F32,
            Kind::BFloat16 => Dtype::BF16,
            Kind::Half => Dtype::F16,
            other => return Err(invalid(path, format!("cannot save `{name}` of kind {other:?}"))),
        };
        let mut bytes = vec![0u8; tensor.numel() * tensor.kind().elt_size_in_bytes()];
        tensor.f_copy_data_u8(&mut bytes, tensor.numel())?;
        let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
        owned.push((name.clone(), dtype, shape, bytes));
    }
    let views = owned
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, e))?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| invalid(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: i64, kind: Kind) -> Tensor {
        Tensor::arange(n, (Kind::Float, Device::Cpu)).sin().to_kind(kind)
    }

    fn loaded(dir: &Path, kind: Kind) -> Result<HashMap<String, Tensor>> {
        let mut vs = VarStore::new(Device::Cpu);
        let _a = vs.root().zeros("a", &[2, 3]);
        let _b = vs.root().zeros("b", &[4]);
        vs.set_kind(kind);
        let unused = load(&mut vs, dir)?;
        assert!(unused.iter().all(|name| name == "unused"), "{unused:?}");
        Ok(vs.variables())
    }

    /// Both read paths: straight into a variable of the file's dtype, and through a scratch
    /// tensor when the dtypes differ; from shards, skipping a tensor the model does not use.
    #[test]
    fn shards_of_each_dtype_load_into_variables_of_each_kind() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (values(6, Kind::Float).view([2, 3]), values(4, Kind::BFloat16));
        save_tensors(
            &[("a".into(), a.shallow_clone())],
            &dir.path().join("one.safetensors"),
        )
        .unwrap();
        let two = [
            ("b".into(), b.shallow_clone()),
            ("unused".into(), values(3, Kind::Half)),
        ];
        save_tensors(&two, &dir.path().join("two.safetensors")).unwrap();
        let index = r#"{"weight_map": {"a": "one.safetensors", "b": "two.safetensors", "unused": "two.safetensors"}}"#;
        std::fs::write(dir.path().join(SHARD_INDEX), index).unwrap();
        let mut vs = VarStore::new(Device::Cpu);
        let (_a, _b) = (vs.root().zeros("a", &[2, 3]), vs.root().zeros("b", &[4]));
        assert_eq!(
            load(&mut vs, dir.path()).unwrap(),
            ["unused"],
            "named for the caller"
        );
        for kind in [Kind::Float, Kind::BFloat16] {
            let vars = loaded(dir.path(), kind).unwrap();
            assert!(vars["a"].equal(&a.to_kind(kind)), "{kind:?}");
            assert!(vars["b"].equal(&b.to_kind(kind)), "{kind:?}");
        }
    }

    /// A tensor the model needs and no file holds names the files looked in.
    #[test]
    fn a_missing_tensor_names_the_file_or_the_shards_index() {
        let dir = tempfile::tempdir().unwrap();
        let only_a = [("a".into(), values(6, Kind::Float).view([2, 3]))];
        save_tensors(&only_a, &dir.path().join(SINGLE_FILE)).unwrap();
        let error = loaded(dir.path(), Kind::Float).err().unwrap().to_string();
        assert!(
            error.contains("tensor `b` is missing from") && error.ends_with(SINGLE_FILE),
            "{error}"
        );
        std::fs::rename(dir.path().join(SINGLE_FILE), dir.path().join("one.safetensors")).unwrap();
        save_tensors(
            &[("c".into(), values(2, Kind::Float))],
            &dir.path().join("two.safetensors"),
        )
        .unwrap();
        let index = r#"{"weight_map": {"a": "one.safetensors", "b": "two.safetensors"}}"#;
        std::fs::write(dir.path().join(SHARD_INDEX), index).unwrap();
        let error = loaded(dir.path(), Kind::Float).err().unwrap().to_string();
        assert!(
            error.contains("tensor `b` is missing from the 2 shards") && error.contains(SHARD_INDEX),
            "{error}"
        );
    }

    /// transformers' order: a `save_pretrained` over a sharded save leaves the old index,
    /// its shards deleted, beside the new single file.
    #[test]
    fn a_single_file_is_read_before_a_stale_index() {
        let dir = tempfile::tempdir().unwrap();
        let a = values(6, Kind::Float).view([2, 3]);
        let named = [
            ("a".into(), a.shallow_clone()),
            ("b".into(), values(4, Kind::Float)),
        ];
        save_tensors(&named, &dir.path().join(SINGLE_FILE)).unwrap();
        let index = r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#;
        std::fs::write(dir.path().join(SHARD_INDEX), index).unwrap();
        assert!(loaded(dir.path(), Kind::Float).unwrap()["a"].equal(&a));
    }

    /// A tied model (no head variable) whose file also holds a head: the same as the
    /// embedding loads; another is refused, naming tie_word_embeddings.
    #[test]
    fn a_stored_head_unlike_the_tied_embedding_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let embedding = values(6, Kind::Float).view([3, 2]);
        let tied = |head: Tensor| {
            let named = [(EMBEDDING.into(), embedding.shallow_clone()), (HEAD.into(), head)];
            save_tensors(&named, &dir.path().join(SINGLE_FILE)).unwrap();
            let mut vs = VarStore::new(Device::Cpu);
            let _embedding = vs
                .root()
                .sub("model")
                .sub("embed_tokens")
                .zeros("weight", &[3, 2]);
            load(&mut vs, dir.path()).err().map(|e| e.to_string())
        };
        assert_eq!(tied(embedding.copy()), None);
        let error = tied(embedding.copy() + 1.0).unwrap_or_default();
        assert!(
            error.contains("tie_word_embeddings") && error.contains(SINGLE_FILE),
            "{error}"
        );
    }

    #[test]
    fn a_truncated_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SINGLE_FILE);
        let named = [
            ("a".into(), values(6, Kind::Float).view([2, 3])),
            ("b".into(), values(4, Kind::Float)),
        ];
        save_tensors(&named, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let error = loaded(dir.path(), Kind::Float).err().unwrap().to_string();
        assert!(
            error.contains("model.safetensors") && error.contains("not a complete safetensors file"),
            "{error}"
        );
        // Cut inside the header, as a copy that stopped early leaves it.
        std::fs::write(&path, &bytes[..6]).unwrap();
        let error = loaded(dir.path(), Kind::Float).err().unwrap().to_string();
        assert!(error.contains("not a complete safetensors file"), "{error}");
    }
}
