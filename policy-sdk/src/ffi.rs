//! Policy models across the boundary, both sides: `PolicyPluginExport` / `PolicyModelExport`
//! put a plugin author's [`PolicyPlugin`] behind the vtables of `crpo_sdk::ffi::policy` (every
//! call in `catch_unwind`), and `ForeignPolicyPlugin` / `ForeignPolicyModel` put a loaded
//! library's vtables behind the sdk traits again, so the engine cannot tell them from a
//! built-in model. The fast path crosses as typed methods (sdk 1.4; the on/off switches and a
//! forward with a typed error since 1.7): the engine's key/value cache is lent by handle and
//! written in place by the library. A library built before 1.4
//! answers `RNone` to those, and its model takes the generic path: its own cache, the
//! default log-prob pass.

use crate::cache::{CacheLayout, KeyValues, KvCache};
use crate::model::{full_forward_continuations, full_forward_from, PolicyLoad, PolicyModel, PolicyPlugin};
use crate::tensor::{
    borrow_tensor, device, ffi_device, ffi_kind, give_tensor, kind, lend_tensor, take_tensor,
};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{ROption, RResult, RSlice, RStr, RString, RVec, Tuple2};
use crpo_sdk::ffi::policy::{
    FfiCacheLayout, FfiDevice, FfiKind, FfiKvCache, FfiPolicyModel, FfiPolicyModelBox, FfiPolicyModel_TO,
    FfiPolicyPlugin, FfiPolicyPluginBox, FfiPolicyPlugin_TO, FfiTensorResult,
};
use crpo_sdk::ffi::{
    catch_panic, catch_panic_typed, exported_info, extension, FfiPluginError, FfiPluginInfo,
};
use crpo_sdk::{PluginError, PluginInfo, Result};
use std::path::Path;
use tch::Tensor;

struct PolicyPluginExport(Box<dyn PolicyPlugin>);

impl FfiPolicyPlugin for PolicyPluginExport {
    fn info(&self) -> FfiPluginInfo {
        exported_info(|| self.0.info())
    }

    fn load(
        &self,
        dir: RStr<'_>,
        device: i64,
        kind: i32,
        options_json: RStr<'_>,
    ) -> RResult<FfiPolicyModelBox, RString> {
        let device = if device < 0 {
            FfiDevice::Cpu
        } else {
            FfiDevice::Cuda(device as u32)
        };
        let Some(kind) = FfiKind::from_code(kind) else {
            return RResult::RErr(format!("unknown dtype code {kind}").into());
        };
        self.load_typed(dir, device, kind, options_json)
            .map_err(|e| PluginError::from(e).to_string().into())
    }

    fn extension(&self, name: RStr<'_>, _request_json: RStr<'_>) -> RResult<RString, RString> {
        RResult::RErr(extension::unknown(name.as_str()))
    }

    fn load_typed(
        &self,
        dir: RStr<'_>,
        device_: FfiDevice,
        kind_: FfiKind,
        options_json: RStr<'_>,
    ) -> RResult<FfiPolicyModelBox, FfiPluginError> {
        catch_panic_typed("load", || {
            let options: serde_json::Value = serde_json::from_str(options_json.as_str())
                .map_err(|e| PluginError::failed(format!("options are not valid JSON: {e}")))?;
            let request = PolicyLoad {
                dir: Path::new(dir.as_str()),
                device: device(device_),
                kind: kind(kind_),
                options: &options,
            };
            let model = self.0.load(&request)?;
            // Read here, where a panic fails the load with its location; the vtable's
            // `cache_layout` has no error to carry one.
            let layout = model.cache_layout();
            Ok(FfiPolicyModel_TO::from_value(
                PolicyModelExport { model, layout },
                TD_Opaque,
            ))
        })
    }

    fn presets(&self) -> RVec<RString> {
        catch_panic("presets", || {
            Ok(self.0.presets().into_iter().map(RString::from).collect())
        })
        .unwrap_or_else(|error| report_lost_error(&error))
    }

    fn write_preset(&self, name: RStr<'_>, dir: RStr<'_>, seed: u64) -> RResult<(), FfiPluginError> {
        catch_panic_typed("write_preset", || {
            self.0.write_preset(name.as_str(), Path::new(dir.as_str()), seed)
        })
    }
}

struct PolicyModelExport {
    model: Box<dyn PolicyModel>,
    layout: Option<CacheLayout>,
}

/// For the sdk 1.0 entry points that return a plain value: an error (a caught panic) cannot
/// cross them, so it is printed here and the host sees an empty answer, which it refuses
/// (no parameters, no presets) naming the plugin.
fn report_lost_error<T: Default>(error: &RString) -> T {
    eprintln!("error: in a policy plugin library: {error}");
    T::default()
}

/// Runs a tensor-returning call and hands the result over.
fn tensor_call(what: &str, call: impl FnOnce() -> Result<Tensor>) -> FfiTensorResult {
    ROption::RSome(catch_panic_typed(what, || call().map(give_tensor)))
}

impl FfiPolicyModel for PolicyModelExport {
    fn forward(&self, input_ids: usize, attention_mask: usize, cache: u64) -> RResult<usize, RString> {
        catch_panic("forward", || {
            if cache != 0 {
                return Err("this model's cache is the engine's (sdk 1.4): use forward_cached".into());
            }
            // SAFETY: the host lends live tensors for this call, after checking that this
            // library runs on its libtorch build.
            let (ids, mask) = unsafe { (borrow_tensor(input_ids), borrow_tensor(attention_mask)) };
            self.model
                .forward(&ids, &mask)
                .map(give_tensor)
                .map_err(|e| e.to_string())
        })
    }

    fn new_cache(&self) -> u64 {
        0
    }

    fn drop_cache(&self, _cache: u64) {}

    fn parameters(&self) -> RVec<Tuple2<RString, usize>> {
        catch_panic("parameters", || {
            Ok(self
                .model
                .parameters()
                .into_iter()
                .map(|(name, t)| Tuple2(name.into(), give_tensor(t)))
                .collect())
        })
        .unwrap_or_else(|error| report_lost_error(&error))
    }

    fn save(&self, dir: RStr<'_>) -> RResult<(), RString> {
        self.save_typed(dir)
            .map_err(|e| PluginError::from(e).to_string().into())
    }

    fn extension(&self, name: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, RString> {
        // What hosts of sdk 1.5 and 1.6 ask (later ones call the typed methods).
        let switch = match name.as_str() {
            extension::POLICY_GRADIENT_CHECKPOINTING => Self::set_gradient_checkpointing,
            extension::POLICY_ADAPTERS_ENABLED => Self::set_adapters_enabled,
            other => return RResult::RErr(extension::unknown(other)),
        };
        let Some(enabled) = serde_json::from_str::<serde_json::Value>(request_json.as_str())
            .ok()
            .and_then(|request| request.get("enabled")?.as_bool())
        else {
            return RResult::RErr(
                format!("{}: the request is not {{\"enabled\": bool}}", name.as_str()).into(),
            );
        };
        switch(self, enabled)
            .map(|()| RString::new())
            .map_err(|error| PluginError::from(error).to_string().into())
    }

    fn cache_layout(&self) -> ROption<FfiCacheLayout> {
        self.layout
            .map(|layout| FfiCacheLayout {
                layers: layout.layers as u32,
                kv_heads: layout.kv_heads as u32,
                head_dim: layout.head_dim as u32,
            })
            .into()
    }

    fn forward_cached(
        &self,
        input_ids: usize,
        attention_mask: usize,
        cache: FfiKvCache<'_>,
    ) -> FfiTensorResult {
        tensor_call("forward_cached", || {
            // SAFETY: as in `forward`; the cache's tensors are lent for this call and written
            // in place, which the host sees through the shared storage.
            let (ids, mask, layers, key_mask) = unsafe {
                let layers = cache
                    .layers
                    .chunks(2)
                    .map(|pair| (borrow_tensor(pair[0]), borrow_tensor(pair[1])))
                    .collect();
                (
                    borrow_tensor(input_ids),
                    borrow_tensor(attention_mask),
                    layers,
                    borrow_tensor(cache.key_mask),
                )
            };
            let mut cache = KvCache::from_parts(layers, key_mask, cache.len);
            self.model.forward_cached(&ids, &mask, &mut cache)
        })
    }

    fn forward_from(&self, input_ids: usize, attention_mask: usize, first: i64) -> FfiTensorResult {
        tensor_call("forward_from", || {
            // SAFETY: as in `forward`.
            let (ids, mask) = unsafe { (borrow_tensor(input_ids), borrow_tensor(attention_mask)) };
            self.model.forward_from(&ids, &mask, first)
        })
    }

    fn forward_continuations(
        &self,
        prompt_ids: usize,
        prompt_mask: usize,
        repeats: RSlice<'_, i64>,
        continuation_ids: usize,
        continuation_mask: usize,
    ) -> FfiTensorResult {
        tensor_call("forward_continuations", || {
            // SAFETY: as in `forward`.
            let tensors = unsafe {
                [prompt_ids, prompt_mask, continuation_ids, continuation_mask].map(|h| borrow_tensor(h))
            };
            let [p_ids, p_mask, c_ids, c_mask] = &tensors;
            self.model
                .forward_continuations(p_ids, p_mask, repeats.as_slice(), c_ids, c_mask)
        })
    }

    fn save_typed(&self, dir: RStr<'_>) -> RResult<(), FfiPluginError> {
        catch_panic_typed("save", || self.model.save(Path::new(dir.as_str())))
    }

    fn forward_typed(&self, input_ids: usize, attention_mask: usize) -> FfiTensorResult {
        tensor_call("forward", || {
            // SAFETY: as in `forward`.
            let (ids, mask) = unsafe { (borrow_tensor(input_ids), borrow_tensor(attention_mask)) };
            self.model.forward(&ids, &mask)
        })
    }

    fn set_gradient_checkpointing(&self, enabled: bool) -> RResult<(), FfiPluginError> {
        catch_panic_typed("set_gradient_checkpointing", || {
            self.model.set_gradient_checkpointing(enabled)
        })
    }

    fn set_adapters_enabled(&self, enabled: bool) -> RResult<(), FfiPluginError> {
        catch_panic_typed("set_adapters_enabled", || {
            self.model.set_adapters_enabled(enabled)
        })
    }
}

/// Used by `export_plugin_library!`: builds the exported policy plugins.
#[doc(hidden)]
pub fn export_policies(
    make: impl FnOnce() -> Vec<Box<dyn PolicyPlugin>>,
) -> RResult<RVec<FfiPolicyPluginBox>, RString> {
    catch_panic("policy plugin constructor", || {
        Ok(make().into_iter().map(export_policy).collect())
    })
}

fn export_policy(plugin: Box<dyn PolicyPlugin>) -> FfiPolicyPluginBox {
    FfiPolicyPlugin_TO::from_value(PolicyPluginExport(plugin), TD_Opaque)
}

/// Host side: a policy plugin from a library, behind the sdk trait. The loader has checked
/// that the library runs on this process's libtorch before anything here is called.
pub struct ForeignPolicyPlugin(pub FfiPolicyPluginBox);

impl PolicyPlugin for ForeignPolicyPlugin {
    fn info(&self) -> PluginInfo {
        self.0.info().into()
    }

    fn load(&self, request: &PolicyLoad<'_>) -> Result<Box<dyn PolicyModel>> {
        let dir = request.dir.to_string_lossy();
        let options = request.options.to_string();
        let model = self
            .0
            .load_typed(
                RStr::from_str(&dir),
                ffi_device(request.device)?,
                ffi_kind(request.kind)?,
                RStr::from_str(&options),
            )
            .into_result()
            .map_err(PluginError::from)?;
        let layout = model.cache_layout().into_option().map(|l| CacheLayout {
            layers: l.layers as usize,
            kv_heads: l.kv_heads as usize,
            head_dim: l.head_dim as usize,
        });
        Ok(Box::new(ForeignPolicyModel { model, layout }))
    }

    fn presets(&self) -> Vec<String> {
        self.0.presets().into_iter().map(String::from).collect()
    }

    fn write_preset(&self, name: &str, dir: &Path, seed: u64) -> Result<()> {
        self.0
            .write_preset(RStr::from_str(name), RStr::from_str(&dir.to_string_lossy()), seed)
            .into_result()
            .map_err(PluginError::from)
    }
}

struct ForeignPolicyModel {
    model: FfiPolicyModelBox,
    /// Read once at load: `None` for a library that keeps its own cache.
    layout: Option<CacheLayout>,
}

/// Takes the tensor a typed call handed over; `None` when the library predates the call.
fn taken(result: FfiTensorResult) -> Option<Result<Tensor>> {
    result.into_option().map(|result| {
        result
            .into_result()
            .map(|handle| {
                // SAFETY: the library handed this tensor over (give_tensor); it is taken once.
                unsafe { take_tensor(handle) }
            })
            .map_err(PluginError::from)
    })
}

impl ForeignPolicyModel {
    /// The answer of an on/off switch (sdk 1.7; 1.5–1.6 through the extension channel).
    fn switched(result: RResult<(), FfiPluginError>, what: &str) -> Result<()> {
        match result.into_result() {
            Ok(()) => Ok(()),
            Err(error) if extension::is_unknown(&error.message) => Err(PluginError::failed(format!(
                "this policy library was built before {what} (crpo-policy-sdk 1.5): rebuild it against the current sdk"
            ))),
            Err(error) => Err(error.into()),
        }
    }

    /// The sdk 1.0 forward (with the library's own cache id, or 0 for none).
    fn legacy_forward(&self, input_ids: &Tensor, attention_mask: &Tensor, cache: u64) -> Result<Tensor> {
        let handle = self
            .model
            .forward(lend_tensor(input_ids), lend_tensor(attention_mask), cache)
            .into_result()
            .map_err(|message| PluginError::Failed(message.into()))?;
        // SAFETY: the library handed this tensor over and it is taken once.
        Ok(unsafe { take_tensor(handle) })
    }
}

impl PolicyModel for ForeignPolicyModel {
    fn cache_layout(&self) -> Option<CacheLayout> {
        self.layout
    }

    fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let typed = self
            .model
            .forward_typed(lend_tensor(input_ids), lend_tensor(attention_mask));
        taken(typed).unwrap_or_else(|| self.legacy_forward(input_ids, attention_mask, 0))
    }

    fn forward_cached(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        if self.layout.is_none() {
            // A library built before 1.4 keeps the keys and values itself, under an id.
            let id = match cache.kept_by_model {
                Some(id) => id,
                None => {
                    let id = self.model.new_cache();
                    if id == 0 {
                        // 0 is "no cache" to `forward`: decoding would see one token at a time.
                        return Err(PluginError::failed(
                            "the library gives no cache layout and keeps no cache of its own (new_cache gave 0)",
                        ));
                    }
                    cache.kept_by_model = Some(id);
                    id
                }
            };
            let logits = self.legacy_forward(input_ids, attention_mask, id)?;
            cache.advance(attention_mask)?;
            return Ok(logits.select(1, -1));
        }
        let (layers, key_mask) = cache.parts();
        let handles: Vec<usize> = layers
            .iter()
            .flat_map(|(k, v)| [lend_tensor(k), lend_tensor(v)])
            .collect();
        let lent = FfiKvCache {
            layers: handles.as_slice().into(),
            key_mask: lend_tensor(key_mask),
            len: cache.len(),
        };
        let result = self
            .model
            .forward_cached(lend_tensor(input_ids), lend_tensor(attention_mask), lent);
        let logits = taken(result).unwrap_or_else(|| {
            Err(PluginError::failed(
                "the library reports a cache layout but has no forward_cached",
            ))
        })?;
        // The library wrote the new positions into the lent storage; account for them here.
        cache.record_extension(attention_mask.size()[1]);
        Ok(logits)
    }

    fn forward_from(&self, input_ids: &Tensor, attention_mask: &Tensor, first: i64) -> Result<Tensor> {
        let typed = self
            .model
            .forward_from(lend_tensor(input_ids), lend_tensor(attention_mask), first);
        taken(typed).unwrap_or_else(|| full_forward_from(self, input_ids, attention_mask, first))
    }

    fn forward_continuations(
        &self,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        repeats: &[i64],
        continuation_ids: &Tensor,
        continuation_mask: &Tensor,
    ) -> Result<Tensor> {
        let typed = self.model.forward_continuations(
            lend_tensor(prompt_ids),
            lend_tensor(prompt_mask),
            repeats.into(),
            lend_tensor(continuation_ids),
            lend_tensor(continuation_mask),
        );
        taken(typed).unwrap_or_else(|| {
            full_forward_continuations(
                self,
                prompt_ids,
                prompt_mask,
                repeats,
                continuation_ids,
                continuation_mask,
            )
        })
    }

    fn release_cache(&self, cache: &mut KvCache) {
        if let Some(id) = cache.kept_by_model.take() {
            self.model.drop_cache(id);
        }
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        // SAFETY: each handle was handed over by the library and is taken once.
        self.model
            .parameters()
            .into_iter()
            .map(|Tuple2(name, handle)| (name.into(), unsafe { take_tensor(handle) }))
            .collect()
    }

    fn save(&self, dir: &Path) -> Result<()> {
        self.model
            .save_typed(RStr::from_str(&dir.to_string_lossy()))
            .into_result()
            .map_err(PluginError::from)
    }

    fn set_gradient_checkpointing(&self, enabled: bool) -> Result<()> {
        Self::switched(
            self.model.set_gradient_checkpointing(enabled),
            "gradient checkpointing",
        )
    }

    fn set_adapters_enabled(&self, enabled: bool) -> Result<()> {
        Self::switched(self.model.set_adapters_enabled(enabled), "LoRA adapters")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::GrowingKvCache;
    use tch::{nn, nn::Module, Device, Kind};

    /// A one-layer attention model small enough to check by eye: embeddings, a single-head
    /// attention over the cache, and a tied head.
    struct Tiny {
        vs: nn::VarStore,
        embed: nn::Embedding,
    }

    impl Tiny {
        fn hidden(&self, ids: &Tensor, mask: &Tensor, cache: &mut dyn KeyValues) -> Result<Tensor> {
            let step = cache.extend(mask)?;
            let xs = self.embed.forward(ids) + step.positions.to_kind(Kind::Float).unsqueeze(-1) * 0.01;
            let q = xs.unsqueeze(1);
            let (k, v) = cache.store(0, &q, &q);
            let out = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                Some(&step.attention_mask),
                0.0,
                false,
                None,
                false,
            );
            Ok(out.squeeze_dim(1))
        }

        fn logits(&self, hidden: &Tensor) -> Tensor {
            hidden.matmul(&self.embed.ws.transpose(0, 1))
        }
    }

    struct TinyPlugin;

    impl PolicyPlugin for TinyPlugin {
        fn info(&self) -> PluginInfo {
            PluginInfo::new("tiny-attention", "1.0.0", "test model")
        }
        fn load(&self, request: &PolicyLoad<'_>) -> Result<Box<dyn PolicyModel>> {
            crpo_sdk::parse_options::<std::collections::BTreeMap<String, i64>>(request.options)?;
            // Weights from a formula, not the global RNG: tests in this crate run in parallel
            // and another test's draws between a seed and this init would change them.
            let vs = nn::VarStore::new(request.device);
            let embed = nn::embedding(vs.root() / "embed", 11, 4, Default::default());
            tch::no_grad(|| {
                let values = Tensor::arange(44, (Kind::Float, request.device)).sin();
                embed.ws.shallow_clone().copy_(&values.view([11, 4]));
            });
            Ok(Box::new(Tiny { vs, embed }))
        }
    }

    impl PolicyModel for Tiny {
        fn cache_layout(&self) -> Option<CacheLayout> {
            Some(CacheLayout {
                layers: 1,
                kv_heads: 1,
                head_dim: 4,
            })
        }
        fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
            let hidden = self.hidden(input_ids, attention_mask, &mut GrowingKvCache::default())?;
            Ok(self.logits(&hidden))
        }
        fn forward_cached(
            &self,
            input_ids: &Tensor,
            attention_mask: &Tensor,
            cache: &mut KvCache,
        ) -> Result<Tensor> {
            let hidden = self.hidden(input_ids, attention_mask, cache)?;
            Ok(self.logits(&hidden).select(1, -1))
        }
        fn parameters(&self) -> Vec<(String, Tensor)> {
            self.vs.variables().into_iter().collect()
        }
        fn save(&self, _dir: &Path) -> Result<()> {
            Err(PluginError::failed("read-only test model"))
        }
    }

    /// Through both sides in one process, as a loaded library is used.
    #[test]
    fn a_policy_model_round_trips_with_the_engine_s_cache() {
        fn request(options: &serde_json::Value) -> PolicyLoad<'_> {
            PolicyLoad {
                dir: Path::new("."),
                device: Device::Cpu,
                kind: Kind::Float,
                options,
            }
        }
        let built_in = TinyPlugin.load(&request(&serde_json::Value::Null)).unwrap();
        let foreign = ForeignPolicyPlugin(export_policy(Box::new(TinyPlugin)));
        assert_eq!(foreign.info().name, "tiny-attention");
        let error = foreign
            .load(&request(&serde_json::json!({"x": "y"})))
            .err()
            .unwrap();
        assert!(error.to_string().contains("invalid type"), "{error}");
        let loaded = foreign.load(&request(&serde_json::Value::Null)).unwrap();
        assert_eq!(loaded.cache_layout(), built_in.cache_layout());

        let ids = Tensor::from_slice(&[0i64, 3, 4, 5, 6, 7]).view([2, 3]);
        let mask = Tensor::from_slice(&[0i64, 1, 1, 1, 1, 1]).view([2, 3]);
        let full = built_in.forward(&ids, &mask).unwrap();
        assert!(loaded.forward(&ids, &mask).unwrap().equal(&full));
        assert!(loaded
            .forward_from(&ids, &mask, 1)
            .unwrap()
            .equal(&full.narrow(1, 1, 2)));

        // Prefill then one step, through the lent cache: the same logits as the full pass.
        let layout = loaded.cache_layout().unwrap();
        let mut cache = KvCache::new(layout, 2, 4, Kind::Float, Device::Cpu);
        let prefix = loaded
            .forward_cached(&ids.narrow(1, 0, 2), &mask.narrow(1, 0, 2), &mut cache)
            .unwrap();
        assert!(prefix.allclose(&full.select(1, 1), 1e-6, 1e-6, false));
        let last = loaded
            .forward_cached(&ids.narrow(1, 2, 1), &mask.narrow(1, 2, 1), &mut cache)
            .unwrap();
        assert_eq!(cache.len(), 3);
        assert!(last.allclose(&full.select(1, 2), 1e-6, 1e-6, false));

        let continuations = loaded
            .forward_continuations(
                &ids.narrow(1, 0, 2),
                &mask.narrow(1, 0, 2),
                &[1, 1],
                &ids.narrow(1, 2, 1),
                &mask.narrow(1, 2, 1),
            )
            .unwrap();
        assert!(continuations.allclose(&full.narrow(1, 1, 1), 1e-6, 1e-6, false));
        assert_eq!(loaded.parameters().len(), 1);
        let saved = loaded.save(Path::new("/nonexistent")).unwrap_err();
        assert_eq!(saved.to_string(), "read-only test model");
    }

    /// The tiny model with one fault, to see what crosses the boundary.
    struct Faulty {
        inner: Box<dyn PolicyModel>,
        fault: &'static str,
    }

    impl PolicyModel for Faulty {
        fn cache_layout(&self) -> Option<CacheLayout> {
            assert!(self.fault != "layout", "no layout today");
            self.inner.cache_layout()
        }
        fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
            if self.fault == "forward" {
                return Err(PluginError::invalid_option("width", "too wide"));
            }
            self.inner.forward(input_ids, attention_mask)
        }
        fn forward_cached(
            &self,
            input_ids: &Tensor,
            attention_mask: &Tensor,
            cache: &mut KvCache,
        ) -> Result<Tensor> {
            self.inner.forward_cached(input_ids, attention_mask, cache)
        }
        fn parameters(&self) -> Vec<(String, Tensor)> {
            assert!(self.fault != "parameters", "parameters lost");
            self.inner.parameters()
        }
        fn save(&self, dir: &Path) -> Result<()> {
            self.inner.save(dir)
        }
        fn set_adapters_enabled(&self, _enabled: bool) -> Result<()> {
            Err(PluginError::invalid_option("lora", "this model has no adapters"))
        }
    }

    struct FaultyPlugin(&'static str);

    impl PolicyPlugin for FaultyPlugin {
        fn info(&self) -> PluginInfo {
            PluginInfo::new("faulty", "1.0.0", "test model")
        }
        fn load(&self, request: &PolicyLoad<'_>) -> Result<Box<dyn PolicyModel>> {
            Ok(Box::new(Faulty {
                inner: TinyPlugin.load(request)?,
                fault: self.0,
            }))
        }
    }

    #[test]
    fn faults_cross_with_their_kind_or_fail_the_load() {
        let options = serde_json::Value::Null;
        let request = PolicyLoad {
            dir: Path::new("."),
            device: Device::Cpu,
            kind: Kind::Float,
            options: &options,
        };
        let load = |fault| ForeignPolicyPlugin(export_policy(Box::new(FaultyPlugin(fault)))).load(&request);

        // A panicking cache_layout fails the load where it happened (it was read as "no
        // layout", and the engine then decoded one token at a time).
        let error = load("layout").err().unwrap().to_string();
        assert!(
            error.contains("panicked") && error.contains("no layout today"),
            "{error}"
        );

        let ids = Tensor::from_slice(&[3i64, 4]).view([1, 2]);
        let model = load("forward").unwrap();
        let error = model.forward(&ids, &ids.ones_like()).unwrap_err();
        assert!(
            matches!(&error, PluginError::InvalidOption { option, .. } if option == "width"),
            "{error:?}"
        );
        let error = model.set_adapters_enabled(false).unwrap_err();
        assert!(
            matches!(&error, PluginError::InvalidOption { option, .. } if option == "lora"),
            "{error:?}"
        );
        assert!(
            model.set_gradient_checkpointing(true).is_err(),
            "the trait's default refuses"
        );

        // No error can cross `parameters`: the library prints it and the host sees none, which
        // it refuses at load (crpo-host's check_contract).
        assert!(load("parameters").unwrap().parameters().is_empty());
    }
}
