//! Safetensors weights: single-file or sharded (`model.safetensors.index.json`), f32, bf16 or
//! f16, memory-mapped so a model never needs twice its size in RAM; and saving in the layout
//! transformers loads.

use crate::error::{invalid, io, PolicyError, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Kind, Tensor};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// The weight files of a model directory, shards in index order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
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
    let single = dir.join(SINGLE_FILE);
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(invalid(dir, format!("no {SINGLE_FILE} or {SHARD_INDEX}")))
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
pub fn load(vs: &mut VarStore, dir: &Path) -> Result<()> {
    let mut wanted: HashMap<String, Tensor> = vs.variables();
    for file in weight_files(dir)? {
        let handle = std::fs::File::open(&file).map_err(io(&file))?;
        // SAFETY: the file is only read; a concurrent writer could change what we read, as
        // with any reader, but cannot cause undefined behaviour beyond wrong values.
        let mmap = unsafe { memmap2::Mmap::map(&handle) }.map_err(io(&file))?;
        let tensors = SafeTensors::deserialize(&mmap).map_err(|e| invalid(&file, e))?;
        for (name, view) in tensors.tensors() {
            let Some(mut var) = wanted.remove(&name) else {
                continue;
            };
            let found: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if found != var.size() {
                return Err(PolicyError::Shape {
                    name,
                    file,
                    expected: var.size(),
                    found,
                });
            }
            let kind = kind_of(view.dtype()).ok_or_else(|| PolicyError::Dtype {
                name: name.clone(),
                file: file.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            let tensor = Tensor::f_from_data_size(view.data(), &found, kind)?;
            tch::no_grad(|| var.f_copy_(&tensor.to_kind(var.kind()).to_device(var.device())))?;
        }
    }
    let mut missing: Vec<String> = wanted.into_keys().collect();
    missing.sort();
    match missing.into_iter().next() {
        Some(name) => Err(PolicyError::MissingTensor {
            name,
            dir: dir.to_path_buf(),
        }),
        None => Ok(()),
    }
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
