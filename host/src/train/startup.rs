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

/// A warning where a step's completions do not fill its updates evenly: the last update of
/// each step then takes fewer, and each of them weighs more in it (TRL refuses such sizes;
/// here a step's completions are all used).
pub fn uneven_last_update(config: &RunConfig, world_size: usize) -> Option<String> {
    let algorithm = &config.algorithm;
    let completions = algorithm.prompts_per_step * algorithm.num_generations;
    let per_update = algorithm.mini_batch_size * algorithm.gradient_accumulation_steps * world_size.max(1);
    let last = completions % per_update.max(1);
    if last == 0 || completions < per_update {
        return None;
    }
    Some(format!(
        "prompts_per_step × num_generations = {completions} completions do not fill a step's updates of {per_update} (per_device_train_batch_size {} × gradient_accumulation_steps {}{}): the last update of each step takes {last}, each of them weighing more in it; make the completions a multiple of {per_update} for even updates",
        algorithm.mini_batch_size,
        algorithm.gradient_accumulation_steps,
        if world_size > 1 {
            format!(" × {world_size} ranks")
        } else {
            String::new()
        }
    ))
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

    #[test]
    fn a_step_whose_completions_leave_a_short_last_update_is_named() {
        let mut config: RunConfig = toml::from_str(
            "[model]\npath = \"m\"\n[data]\npath = \"d.jsonl\"\n[reward]\npreset = \"crpo\"\n[algorithm]\nprompts_per_step = 5\nnum_generations = 4\nper_device_train_batch_size = 8\ngradient_accumulation_steps = 1\n",
        )
        .unwrap();
        let warning = uneven_last_update(&config, 1).unwrap();
        assert!(
            warning.starts_with(
                "prompts_per_step × num_generations = 20 completions do not fill a step's updates of 8"
            ) && warning.contains("the last update of each step takes 4"),
            "{warning}"
        );
        // Even on one rank, short on two (24 completions, 8 × 2 = 16 per update: the last takes 8).
        config.algorithm.prompts_per_step = 6;
        assert_eq!(uneven_last_update(&config, 1), None);
        let warning = uneven_last_update(&config, 2).unwrap();
        assert!(warning.contains("× 2 ranks"), "{warning}");
        // Fewer completions than one update: a single update, nothing uneven.
        config.algorithm.prompts_per_step = 1;
        assert_eq!(uneven_last_update(&config, 1), None);
    }
}
