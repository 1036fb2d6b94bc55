//! Every rank must train with the same settings: a rank started with another config (another
//! `num_generations`, learning rate, seed, …) would fail deep inside a step or, worse, train
//! its replica apart from the others without a word. Right after joining, the ranks compare
//! their configs and all stop, naming each key that differs and where.

use super::World;
use crate::train::config::RunConfig;
use crate::train::resume::config_changes;

/// Keys that may differ between ranks: where each machine keeps its files (the models are
/// compared by checksum after the broadcast, and only rank 0 writes to `output_dir`).
const PER_MACHINE: [&str; 5] = [
    "model.path",
    "model.lora.adapter",
    "data.path",
    "data.eval_path",
    "run.output_dir",
];

/// Refuses to start unless every rank's `config` is rank 0's but for [`PER_MACHINE`] keys.
pub fn check_same_config(world: &World, config: &RunConfig) -> anyhow::Result<()> {
    let mine = serde_json::to_vec(config)?;
    let all = world.all_gather("comparing the ranks' configs", &mine)?;
    let first: RunConfig = serde_json::from_slice(&all[0])?;
    let mut differences = Vec::new();
    for (rank, bytes) in all.iter().enumerate().skip(1) {
        let theirs: RunConfig = serde_json::from_slice(bytes)?;
        for change in config_changes(&first, &theirs)? {
            if !PER_MACHINE.contains(&change.key.as_str()) {
                differences.push(format!(
                    "  {}: {} on rank 0, {} on rank {rank}",
                    change.key, change.was, change.now
                ));
            }
        }
    }
    if !differences.is_empty() {
        anyhow::bail!(
            "the ranks were started with different configs (every rank must train with the same settings):\n{}",
            differences.join("\n")
        );
    }
    Ok(())
}
