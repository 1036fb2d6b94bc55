//! `qwen2-library`: the built-in `qwen2` policy exported from a plugin library under its own
//! name, so the host can load it beside the built-in and check that a loaded policy gives the
//! same samples and log-probs, through the same engine path, at the same speed.

use crpo_plugins_policy::plugin::Qwen2PolicyPlugin;
use crpo_policy_sdk::{PluginInfo, PolicyLoad, PolicyModel, PolicyPlugin, Result};
use std::path::Path;

pub struct Qwen2Library;

impl PolicyPlugin for Qwen2Library {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "qwen2-library",
            env!("CARGO_PKG_VERSION"),
            "the built-in Qwen2/Llama decoder, loaded from a plugin library",
        )
    }

    fn load(&self, request: &PolicyLoad<'_>) -> Result<Box<dyn PolicyModel>> {
        Qwen2PolicyPlugin.load(request)
    }

    fn presets(&self) -> Vec<String> {
        Qwen2PolicyPlugin.presets()
    }

    fn write_preset(&self, name: &str, dir: &Path, seed: u64) -> Result<()> {
        Qwen2PolicyPlugin.write_preset(name, dir, seed)
    }
}

crpo_policy_sdk::export_plugin_library! {
    rewards: [],
    datasets: [],
    policies: [Qwen2Library],
}
