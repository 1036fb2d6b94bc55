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
pub fn train_work(names: &[String], weights: &[f32], config: &RunConfig) -> String {
    let objectives: Vec<String> = names
        .iter()
        .zip(weights)
        .map(|(name, weight)| format!("{weight}·{name}"))
        .collect();
    let algorithm = &config.algorithm;
    format!(
        "reward {}; {} steps of {} prompts × {} completions",
        objectives.join(" + "),
        config.run.max_steps,
        algorithm.prompts_per_step,
        algorithm.num_generations
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
        let work = train_work(&["accuracy".into(), "format".into()], &[1.0, 0.5], &config);
        let line = line("train", &config, &work, std::path::Path::new("runs/x"));
        assert!(line.starts_with("train: m (policy `qwen2`) on cpu in f32; reward 1·accuracy + 0.5·format; 7 steps of 2 prompts"), "{line}");
        assert!(line.ends_with("writing runs/x"), "{line}");
    }
}
