//! The decoder as the built-in `qwen2` policy plugin, so the trainer reaches it through the
//! same interface as a policy loaded from a library.

use crate::policy::Policy;
use crate::qwen2::KvCache;
use crpo_sdk::policy::{repeat_index, CacheId, PolicyLoad, PolicyModel, PolicyPlugin};
use crpo_sdk::{parse_options, PluginError, PluginInfo};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tch::Tensor;

pub struct Qwen2PolicyPlugin;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoOptions {}

impl PolicyPlugin for Qwen2PolicyPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "qwen2",
            env!("CARGO_PKG_VERSION"),
            "Qwen2/Llama decoder from a Hugging Face model directory (config.json, safetensors, tokenizer.json)",
        )
    }

    fn load(&self, request: &PolicyLoad<'_>) -> Result<Box<dyn PolicyModel>, PluginError> {
        parse_options::<NoOptions>(request.options)?;
        let policy = Policy::load(request.dir, request.device, request.kind).map_err(PluginError::failed)?;
        Ok(Box::new(LoadedPolicy {
            policy,
            caches: Mutex::default(),
            next_cache: AtomicU64::new(1),
        }))
    }
}

crpo_sdk::register_policy!(Qwen2PolicyPlugin);

struct LoadedPolicy {
    policy: Policy,
    caches: Mutex<HashMap<u64, KvCache>>,
    next_cache: AtomicU64,
}

impl LoadedPolicy {
    /// Runs `f` on cache `id`, or names what is missing.
    fn with_cache<T>(&self, id: u64, f: impl FnOnce(&mut KvCache) -> T) -> Result<T, PluginError> {
        let mut caches = self
            .caches
            .lock()
            .map_err(|_| PluginError::failed("a cache lock was poisoned"))?;
        let cache = caches
            .get_mut(&id)
            .ok_or_else(|| PluginError::failed(format!("no cache {id}")))?;
        Ok(f(cache))
    }
}

impl PolicyModel for LoadedPolicy {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        cache: Option<CacheId>,
    ) -> Result<Tensor, PluginError> {
        let Some(CacheId(id)) = cache else {
            return Ok(self.policy.model.forward(input_ids, attention_mask, None));
        };
        // With a cache this is generation, which reads only the last position (see the trait).
        self.with_cache(id, |cache| {
            self.policy
                .model
                .forward_last(input_ids, attention_mask, Some(cache))
        })
    }

    fn forward_from(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        first: i64,
    ) -> Result<Tensor, PluginError> {
        let hidden = self.policy.model.hidden_states(input_ids, attention_mask, None);
        let width = hidden.size()[1];
        Ok(self.policy.model.logits(&hidden.narrow(1, first, width - first)))
    }

    fn prefill_repeated(
        &self,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        repeats: &[i64],
        cache: CacheId,
    ) -> Result<Tensor, PluginError> {
        let rows = repeat_index(repeats, prompt_ids.device())?;
        self.with_cache(cache.0, |cache| {
            self.policy
                .model
                .prefill_repeated(prompt_ids, prompt_mask, &rows, cache)
        })
    }

    fn forward_continuations(
        &self,
        prompt_ids: &Tensor,
        prompt_mask: &Tensor,
        repeats: &[i64],
        continuation_ids: &Tensor,
        continuation_mask: &Tensor,
    ) -> Result<Tensor, PluginError> {
        let rows = repeat_index(repeats, prompt_ids.device())?;
        Ok(self.policy.model.forward_continuations(
            prompt_ids,
            prompt_mask,
            &rows,
            continuation_ids,
            continuation_mask,
        ))
    }

    fn new_cache(&self) -> CacheId {
        let id = self.next_cache.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut caches) = self.caches.lock() {
            caches.insert(id, KvCache::default());
        }
        CacheId(id)
    }

    fn drop_cache(&self, cache: CacheId) {
        if let Ok(mut caches) = self.caches.lock() {
            caches.remove(&cache.0);
        }
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        // A query, not a fixed list: frozen variables (e.g. under LoRA) are left out.
        let mut named: Vec<(String, Tensor)> = self
            .policy
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }

    fn save(&self, dir: &Path) -> Result<(), PluginError> {
        self.policy.save(dir).map_err(PluginError::failed)
    }
}
