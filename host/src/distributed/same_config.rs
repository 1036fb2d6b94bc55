//! Every rank must train with the same settings and data: a rank started with another config
//! (another `num_generations`, learning rate, seed, …) would fail deep inside a step or, worse,
//! train its replica apart from the others without a word, and a rank reading another data
//! file (a machine's stale copy) would train on prompts no rank chose and record its
//! completions under rank 0's examples. Right after joining, the ranks compare their configs,
//! then their data files by content, and all stop, naming what differs and where.

use super::World;
use crate::train::config::RunConfig;
use crate::train::input_fingerprints::InputFingerprints;
use crate::train::resume::config_changes;

/// Keys that may differ between ranks: the device (on CUDA each rank takes the GPU of its
/// LOCAL_RANK) and where each machine keeps its files (the models are compared by checksum
/// after the broadcast, the data by content, and only rank 0 writes to `output_dir`).
const PER_MACHINE: [&str; 6] = [
    "model.device",
    "model.path",
    "model.lora.adapter",
    "data.path",
    "data.eval_path",
    "run.output_dir",
];

/// Refuses to start unless every rank's `config` is rank 0's but for [`PER_MACHINE`] keys.
pub fn check_same_config(world: &World, config: &RunConfig) -> anyhow::Result<()> {
    let mine = serde_json::to_vec(config)?;
    let configs = world
        .all_gather("comparing the ranks' configs", &mine)?
        .iter()
        .map(|bytes| serde_json::from_slice(bytes))
        .collect::<Result<Vec<RunConfig>, _>>()?;
    let differences = differences(&configs)?;
    if !differences.is_empty() {
        anyhow::bail!(
            "the ranks were started with different configs (every rank must train with the same settings):\n{}",
            differences.join("\n")
        );
    }
    Ok(())
}

/// Refuses to start unless every rank's data files hold rank 0's contents (each machine may
/// keep them under another path).
pub fn check_same_data(world: &World, config: &RunConfig, inputs: &InputFingerprints) -> anyhow::Result<()> {
    let mine = serde_json::to_vec(&(
        inputs.data.as_deref(),
        inputs.eval_data.as_deref(),
        config.data.path.display().to_string(),
    ))?;
    let all = world.all_gather("comparing the ranks' data", &mine)?;
    let all: Vec<(Option<String>, Option<String>, String)> = all
        .iter()
        .map(|bytes| serde_json::from_slice(bytes))
        .collect::<Result<_, _>>()?;
    let (data0, eval0, path0) = &all[0];
    for (rank, (data, eval, path)) in all.iter().enumerate().skip(1) {
        if data != data0 {
            anyhow::bail!(
                "the ranks read different training data: data.path {path} on rank {rank} holds other contents than {path0} on rank 0 (every rank must read the same file; copy rank 0's)"
            );
        }
        if eval != eval0 {
            anyhow::bail!(
                "the ranks read different held-out data: data.eval_path on rank {rank} holds other contents than on rank 0 (every rank must read the same file; copy rank 0's)"
            );
        }
    }
    Ok(())
}

/// Each key, but for [`PER_MACHINE`] ones, where a rank's config differs from rank 0's.
fn differences(configs: &[RunConfig]) -> anyhow::Result<Vec<String>> {
    let mut differences = Vec::new();
    for (rank, theirs) in configs.iter().enumerate().skip(1) {
        for change in config_changes(&configs[0], theirs)? {
            if !PER_MACHINE.contains(&change.key.as_str()) {
                differences.push(format!(
                    "  {}: {} on rank 0, {} on rank {rank}",
                    change.key, change.was, change.now
                ));
            }
        }
    }
    Ok(differences)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rank_s_gpu_may_differ_and_a_setting_may_not() {
        let config = RunConfig::parse(
            "[model]\npath = \"m\"\ndevice = \"cuda:0\"\n[data]\npath = \"d.jsonl\"\n[[reward.objectives]]\nplugin = \"consistency\"\n",
        )
        .unwrap();
        let mut other = config.clone();
        other.model.device = "cuda:1".into();
        assert!(differences(&[config.clone(), other.clone()]).unwrap().is_empty());
        other.algorithm.learning_rate *= 2.0;
        let found = differences(&[config, other]).unwrap();
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("  algorithm.learning_rate:") && found[0].ends_with("on rank 1"),
            "{found:?}"
        );
    }
}
