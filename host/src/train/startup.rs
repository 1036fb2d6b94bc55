//! The line `train` and `sft` print at once, before anything loads (a 3B model takes tens of
//! seconds to read): what runs, where, in which dtype, and where it writes.

use super::config::RunConfig;
use crate::device::{device_name, dtype_name, parse_device, parse_dtype};

/// `mode: MODEL (policy `P`) on DEVICE in DTYPE; WHAT; writing DIR`, the device and dtype as
/// the config's `auto` resolves on this machine (as the model will be loaded).
pub fn line(mode: &str, config: &RunConfig, what: &str, writing: &std::path::Path) -> String {
    let placement = parse_device(&config.model.device)
        .and_then(|device| Ok((device, parse_dtype(&config.model.dtype, device)?)))
        .map(|(device, kind)| format!("on {} in {}", device_name(device), dtype_name(kind)))
        // A bad value is refused, naming the key, when the model loads.
        .unwrap_or_else(|_| format!("on {} in {}", config.model.device, config.model.dtype));
    format!(
        "{mode}: {} (policy `{}`) {placement}{}; {what}; writing {}",
        config.model.path.display(),
        config.model.policy,
        if config.model.lora.is_some() {
            " with LoRA"
        } else {
            ""
        },
        writing.display()
    )
}

/// What `train` runs: the weighted objectives and the steps.
pub fn train_work(names: &[String], weights: &[f32], config: &RunConfig, world_size: usize) -> String {
    let objectives: Vec<String> = names
        .iter()
        .zip(weights)
        .map(|(name, weight)| format!("{weight}·{name}"))
        .collect();
    let algorithm = &config.algorithm;
    // TRL makes one update per generation by default; here a step may make several, the
    // later ones from rollouts of an older policy: said, so a TRL user's batch sizes show.
    let updates = algorithm.updates_per_step(world_size);
    format!(
        "reward {}; {} steps of {} prompts × {} completions, each making {updates} optimizer update{} of {} × {} completions{}",
        objectives.join(" + "),
        config.run.max_steps,
        algorithm.prompts_per_step,
        algorithm.num_generations,
        if updates == 1 { "" } else { "s" },
        algorithm.mini_batch_size,
        algorithm.gradient_accumulation_steps,
        if world_size > 1 { " on each rank" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_model_placement_objectives_and_steps() {
        let mut config: RunConfig = toml::from_str(
            "[run]\nmax_steps = 7\n[model]\npath = \"m\"\ndevice = \"cpu\"\n[data]\npath = \"d.jsonl\"\n[reward]\npreset = \"crpo\"\n",
        )
        .unwrap();
        config.algorithm.prompts_per_step = 2;
        let work = train_work(&["accuracy".into(), "format".into()], &[1.0, 0.5], &config, 1);
        let line = line("train", &config, &work, std::path::Path::new("runs/x"));
        assert!(line.starts_with("train: m (policy `qwen2`) on cpu in f32; reward 1·accuracy + 0.5·format; 7 steps of 2 prompts"), "{line}");
        assert!(line.ends_with("writing runs/x"), "{line}");
        assert!(
            line.contains("each making 1 optimizer update of 16 × 4 completions"),
            "{line}"
        );
        // TRL's per-device batch of 4 without accumulation: 4 updates from one rollout.
        (
            config.algorithm.mini_batch_size,
            config.algorithm.gradient_accumulation_steps,
        ) = (4, 1);
        let work = train_work(&["accuracy".into()], &[1.0], &config, 1);
        assert!(
            work.ends_with("each making 4 optimizer updates of 4 × 1 completions"),
            "{work}"
        );
    }
}
