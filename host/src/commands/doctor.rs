//! `crpo-host doctor`: what this installation runs on, and (`--check-model DIR`) whether a
//! model gives on the chosen device and dtype what it gives on the CPU in f32.

use crate::attention_backend;
use crate::device::{parse_device, parse_dtype};
use crate::memory_stats;
use crate::plugins::trust::Trust;
use crate::plugins::PluginRegistry;
use crate::rollout::generation::{DecodeSteps, GenerationStats};
use crate::rollout::sampling::SamplingConfig;
use crate::rollout::Policy;
use crate::torch_info::{cuda_devices, loaded_libtorch_dir, torch_version};
use crate::train::config::RunConfig;
use crate::train::memory_plan;
use anyhow::bail;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Also compare this model on --device/--dtype with the CPU in f32: last-position logits
    /// on a few prompts (within the dtype's tolerance) and greedy continuations (equal).
    #[arg(long, value_name = "DIR", value_parser = crate::home_path::path_argument)]
    pub check_model: Option<PathBuf>,
    /// The policy plugin that loads --check-model.
    #[arg(long, default_value = "qwen2")]
    pub policy: String,
    /// auto | cpu | cuda | cuda:N (for --check-model)
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto (bf16 on CUDA, f32 on CPU) | f32 | bf16 (for --check-model)
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Also print the memory plan of this run config (train) against the free memory of its
    /// device, and whether it fits.
    #[arg(long, value_name = "FILE", value_parser = crate::home_path::path_argument)]
    pub config: Option<PathBuf>,
}

pub fn run(plugin_dirs: &[PathBuf], args: &DoctorArgs) -> anyhow::Result<()> {
    // With a run config, its plugin directories and pins too, as `train` loads them; a config
    // that does not read fails after the report.
    let config = args.config.as_deref().map(RunConfig::load);
    let mut dirs = plugin_dirs.to_vec();
    let mut trust = Trust::default();
    if let Some(Ok(config)) = &config {
        dirs.extend(config.run.plugin_dirs.iter().cloned());
        trust = Trust {
            pins: config.run.plugin_pins.clone(),
            allow_insecure: config.run.allow_insecure_plugins,
        };
    }
    report(&dirs)?;
    config.transpose()?;
    // The plugin directories load as `train` would load them: a library that is no plugin,
    // a name clash or a pin it fails, fails doctor as it would fail the run.
    let registry = PluginRegistry::load_trusted(&dirs, &trust)?;
    println!(
        "plugins          {} reward, {} dataset, {} policy (`crpo-host plugins` lists them)",
        registry.rewards().len(),
        registry.datasets().len(),
        registry.policies().len(),
    );
    if let Some(model) = &args.check_model {
        check_model(&registry, model, args)?;
    }
    if let Some(path) = &args.config {
        memory_plan_of(path)?;
    }
    Ok(())
}

/// The memory plans of a run config (`train`, and `sft`), with the verdict each command
/// would reach; sft's counts in the exit status only where the config has an [sft] section
/// (a train-only config would otherwise fail on sft's defaults it never runs with).
fn memory_plan_of(path: &std::path::Path) -> anyhow::Result<()> {
    let config = RunConfig::load(path)?;
    let has_sft_section = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|table| table.contains_key("sft"));
    let mut refused = Vec::new();
    for (phase, command) in [
        (memory_plan::Phase::Train, "train"),
        (memory_plan::Phase::Sft, "sft"),
    ] {
        let Some((plan, shape, device)) = memory_plan::plan_run(&config, phase)? else {
            let model = &config.model.path;
            if !model.is_dir() {
                bail!(
                    "model.path {} in {}: {}",
                    model.display(),
                    path.display(),
                    if model.exists() {
                        "a file, not a model directory"
                    } else {
                        "no such directory"
                    }
                );
            }
            println!(
                "memory plan: {} has no decoder shape in config.json; no plan",
                model.display()
            );
            return Ok(());
        };
        for refusal in crate::train::preflight::refusals(&config, phase) {
            println!("refused: {refusal} ({command} would refuse it before loading)");
            refused.push(command);
        }
        println!(
            "memory plan of {} ({command}) on {device:?} ({} parameters{}):\n{}",
            path.display(),
            shape.parameters,
            if shape.counted {
                ""
            } else {
                ", from config.json's shape: no weights there yet"
            },
            plan.table()
        );
        if let Some(lora) = &plan.settings.lora {
            if shape.adapter_parameters(lora) == 0 {
                println!(
                    "refused: model.lora selects none of the model's linear layers ({command} would refuse it at load)"
                );
                refused.push(command);
                continue;
            }
        }
        match memory_plan::free_memory(device) {
            Some((free, what)) => match memory_plan::check_fits(&plan, &shape, free, &what) {
                Ok(()) => println!("fits: {} of {} {what}", gib(plan.peak()), gib(free)),
                Err(refusal) => {
                    println!("does NOT fit: {refusal}");
                    if config.run.memory_check {
                        refused.push(command);
                    }
                }
            },
            None => println!("(the free memory of {device:?} is unknown)"),
        }
    }
    // A check's verdict is its exit status too, as `train` would end.
    refused.dedup();
    if !has_sft_section && refused.contains(&"sft") {
        println!(
            "(sft's verdict is on its defaults: this config has no [sft] section, so it is not counted; add one to have doctor judge it for sft)"
        );
        refused.retain(|command| *command != "sft");
    }
    if !refused.is_empty() {
        bail!(
            "{}: {} would refuse this config (why: above)",
            path.display(),
            refused.join(" and ")
        );
    }
    Ok(())
}

fn report(plugin_dirs: &[PathBuf]) -> anyhow::Result<()> {
    println!("crpo-host        {}", env!("CARGO_PKG_VERSION"));
    println!("crpo-sdk (ABI)   {}", crpo_sdk::SDK_VERSION);

    // Any tensor op makes sure libtorch is initialised before we look at it.
    let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
    let lib_dir = loaded_libtorch_dir();
    let version = lib_dir.as_deref().and_then(torch_version);
    match (&lib_dir, &version) {
        (Some(dir), Some(v)) => println!("torch            {v} ({})", dir.display()),
        (Some(dir), None) => println!("torch            unknown version ({})", dir.display()),
        (None, _) => {
            anyhow::bail!("libtorch is linked but not mapped in this process: cannot tell which one runs")
        }
    }

    let cuda = tch::Cuda::is_available();
    println!("CUDA available   {}", yes_no(cuda));
    println!("CUDA devices     {}", tch::Cuda::device_count());
    match cuda_devices() {
        Ok(devices) => {
            for d in devices {
                let free = memory_stats::free_and_total(tch::Device::Cuda(d.index))
                    .map(|(free, _)| format!(", {} free", gib(free)))
                    .unwrap_or_default();
                println!(
                    "  cuda:{}  {}  {}{free}",
                    d.index,
                    d.name,
                    gib(d.total_memory_bytes)
                );
            }
        }
        Err(why) if cuda => println!("  (device details unavailable: {why})"),
        Err(_) => {}
    }
    let has_cuda_lib = lib_dir
        .as_ref()
        .is_some_and(|d| d.join("libtorch_cuda.so").exists());
    if has_cuda_lib && !cuda {
        println!("  (this libtorch has CUDA support; no usable GPU or driver was found)");
    }
    println!("cuDNN available  {}", yes_no(tch::Cuda::cudnn_is_available()));
    println!(
        "memory shim      {}",
        if crpo_torch_ext::built_with_cuda() {
            "CUDA allocator statistics (peak GPU memory in metrics.jsonl)"
        } else {
            "built without CUDA headers: no GPU memory statistics"
        }
    );
    attention_backends(cuda);
    let backend = |backend: crpo_torch_ext::c10d::Backend| {
        if backend.built() {
            "yes"
        } else {
            "no"
        }
    };
    println!(
        "distributed      c10d gloo (CPU) {}, nccl (CUDA) {}  (docs/distributed.md)",
        backend(crpo_torch_ext::c10d::Backend::Gloo),
        backend(crpo_torch_ext::c10d::Backend::Nccl)
    );
    println!(
        "CPU threads      {} (torch uses {})",
        available_cores(),
        tch::get_num_threads()
    );
    println!(
        "plugin dirs      {}",
        if plugin_dirs.is_empty() {
            "(none)".to_string()
        } else {
            String::new()
        }
    );
    for dir in plugin_dirs {
        let state = if dir.is_dir() { "" } else { "  (missing)" };
        println!("  {}{state}", dir.display());
    }
    Ok(())
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The attention kernel libtorch picks for a prefill and a decode step of Qwen2.5-0.5B's
/// heads (14 query heads over 2 key/value heads of 64) with the decoder's boolean mask.
fn attention_backends(cuda: bool) {
    let mut targets = vec![(tch::Device::Cpu, tch::Kind::Float, "cpu f32")];
    if cuda {
        targets.push((tch::Device::Cuda(0), tch::Kind::BFloat16, "cuda:0 bf16"));
    }
    println!("attention (SDPA) kernel, grouped-query heads with a key mask:");
    for (device, kind, label) in targets {
        let pick = |lengths| {
            attention_backend::choice(device, kind, (14, 2, 64), lengths).unwrap_or("(the query failed)")
        };
        println!(
            "  {label:<12} prefill 512: {}; decode over 4096: {}",
            pick((512, 512)),
            pick((1, 4096))
        );
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Prompts the check runs: clinical text the demo's tokenizer knows, and generic text.
const CHECK_PROMPTS: [&str; 4] = [
    "A 54-year-old woman comes to the emergency department with chest pain",
    "<|im_start|>user\nWhich of the following is the most likely diagnosis?<|im_end|>\n<|im_start|>assistant\n",
    "The best initial test for suspected pulmonary embolism is",
    "System 1:",
];

/// Compares the model on the target device and dtype with the CPU in f32.
fn check_model(registry: &PluginRegistry, model: &std::path::Path, args: &DoctorArgs) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let kind = parse_dtype(&args.dtype, device)?;
    let options = serde_json::Value::Null;
    let reference = Policy::load_with(registry, &args.policy, model, Device::Cpu, Kind::Float, &options)?;
    let target = Policy::load_with(registry, &args.policy, model, device, kind, &options)?;
    // bf16 keeps 8 bits of mantissa: logits agree to about 1% of their scale.
    let tolerance = if kind == Kind::Float { 1e-3 } else { 3e-2 };
    println!(
        "check {} on {device:?} {kind:?} against the CPU in f32:",
        model.display()
    );
    let greedy = SamplingConfig {
        max_new_tokens: 16,
        greedy: true,
        ..SamplingConfig::default()
    };
    let mut failures = 0;
    for prompt in CHECK_PROMPTS {
        let ids = reference.tokenizer.encode(prompt)?;
        let last_logits = |policy: &Policy| -> anyhow::Result<Tensor> {
            let input = Tensor::from_slice(&ids).unsqueeze(0).to_device(policy.device);
            let logits = tch::no_grad(|| policy.model.forward(&input, &input.ones_like()))?;
            Ok(logits.select(1, -1).to_device(Device::Cpu).to_kind(Kind::Float))
        };
        let (ours, theirs) = (last_logits(&reference)?, last_logits(&target)?);
        let scale = ours.abs().max().double_value(&[]).max(1.0);
        let diff = (&ours - &theirs).abs().max().double_value(&[]) / scale;
        let continuation = |policy: &Policy| -> anyhow::Result<(Vec<i64>, GenerationStats)> {
            let (mut completions, stats) = policy.generate(std::slice::from_ref(&ids), &greedy)?;
            Ok((completions.remove(0).ids, stats))
        };
        // Asked before generating: a capture that fails turns graphs off for the process.
        let graphs_expected = matches!(
            DecodeSteps::for_model(&*target.model, target.device),
            DecodeSteps::Fixed(_)
        );
        let (expected, (generated, stats)) = (continuation(&reference)?.0, continuation(&target)?);
        let same = expected == generated;
        // A pair's first step warms up and its second is captured: from two decode steps on,
        // one must have replayed (a greedy text that ends sooner proves nothing either way).
        let graphed = !graphs_expected || stats.graphed_steps > 0 || stats.decode_steps < 2;
        let ok = diff <= tolerance && same && graphed;
        failures += usize::from(!ok);
        println!(
            "  {:<4} logits max diff {diff:.2e} of scale (tolerance {tolerance:.0e}), greedy 16 tokens {}{}: {:?}",
            if ok { "ok" } else { "FAIL" },
            if same { "equal" } else { "differ" },
            match (graphs_expected, graphed) {
                (false, _) => String::new(),
                (true, true) => format!(
                    " ({} of {} decode steps replayed as CUDA graphs)",
                    stats.graphed_steps, stats.decode_steps
                ),
                (true, false) => " (CUDA graphs did not run: see the warning above)".into(),
            },
            prompt.chars().take(40).collect::<String>()
        );
    }
    if failures > 0 {
        bail!(
            "{failures} of {} prompts differ beyond the tolerance",
            CHECK_PROMPTS.len()
        );
    }
    Ok(())
}
