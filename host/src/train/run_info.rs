//! `<run>/run_info.json`: what a run ran on (versions, device, plugins), written at each start
//! so the report can say it.

use crate::plugins::PluginRegistry;
use crate::rollout::Policy;
use serde_json::{json, Value};
use std::path::Path;

pub const RUN_INFO_FILE: &str = "run_info.json";

/// Writes the environment of the process about to train `policy` into `run_dir`.
pub fn write(
    run_dir: &Path,
    command: &str,
    policy: &Policy,
    registry: &PluginRegistry,
    world_size: usize,
) -> anyhow::Result<()> {
    let plugins: Vec<Value> = registry
        .rewards()
        .iter()
        .map(|p| json!({"kind": "reward", "name": p.info.name, "version": p.info.version, "origin": p.origin.to_string()}))
        .chain(
            registry
                .policies()
                .iter()
                .map(|p| json!({"kind": "policy", "name": p.info.name, "version": p.info.version, "origin": p.origin.to_string()})),
        )
        .collect();
    let torch = crate::torch_info::loaded_libtorch_dir()
        .as_deref()
        .and_then(crate::torch_info::torch_version);
    let info = json!({
        "command": command,
        "crpo_host": env!("CARGO_PKG_VERSION"),
        "torch": torch,
        "device": crate::device::device_name(policy.device),
        "dtype": crate::device::dtype_name(policy.kind),
        "policy": policy.plugin,
        "model": policy.source.display().to_string(),
        "os": std::env::consts::OS,
        "cpu_threads": tch::get_num_threads(),
        "processes": world_size,
        "plugins": plugins,
    });
    crate::atomic_file::write(&run_dir.join(RUN_INFO_FILE), serde_json::to_string_pretty(&info)?)
}

/// Whether `path` holds a run_info.json a crpo run wrote (so another run may replace it).
pub fn is_run_info(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .is_some_and(|info| info.get("crpo_host").is_some() && info.get("command").is_some())
}
