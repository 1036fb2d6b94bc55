//! The memory plan through the CLI: a run that cannot fit is refused before anything is loaded
//! or written, naming what would make it fit; `doctor --config` prints the same plan; and a
//! run with gradient checkpointing trains.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn crpo(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

fn demo_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/demo/train.jsonl")
}

fn write_config(dir: &Path, algorithm: &str) {
    let config = format!(
        "[run]\noutput_dir = \"run\"\nmax_steps = 1\nsample_steps = 0\n[model]\npath = \"model\"\ndevice = \"cpu\"\n[data]\npath = \"{}\"\neval_fraction = 0.0\n[[reward.objectives]]\nplugin = \"consistency\"\n[algorithm]\nnum_generations = 2\nprompts_per_step = 2\nmax_completion_length = 8\n{algorithm}\n",
        demo_data().display()
    );
    std::fs::write(dir.join("run.toml"), config).unwrap();
}

/// A model directory describing a 70B-parameter decoder: config.json and a safetensors file
/// whose header lists the tensors (no data: the plan reads headers only).
fn write_huge_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
            "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256}"#,
    )
    .unwrap();
    let header = serde_json::json!({
        "model.embed_tokens.weight": {"dtype": "BF16", "shape": [128256, 8192], "data_offsets": [0, 0]},
        "model.layers.weight": {"dtype": "BF16", "shape": [80, 855638016], "data_offsets": [0, 0]},
    })
    .to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
}

#[test]
fn a_run_that_cannot_fit_is_refused_before_loading_naming_what_would_fit() {
    let dir = tempfile::tempdir().unwrap();
    write_huge_model(&dir.path().join("model"));
    write_config(dir.path(), "per_device_train_batch_size = 16\nbeta = 0.04");
    let output = crpo(dir.path(), &["train", "--config", "run.toml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for needle in [
        "needs about",
        "available to this machine",
        "algorithm.gradient_checkpointing = true",
        "algorithm.beta = 0",
        "run.memory_check = false",
        "AdamW moments",
    ] {
        assert!(stderr.contains(needle), "{needle} missing:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !dir.path().join("run").exists(),
        "nothing is written for a refused run"
    );

    // doctor prints the same plan and verdict.
    let output = crpo(dir.path(), &["doctor", "--config", "run.toml"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Its verdict is its exit status, as train's (it exited 0).
    assert_eq!(output.status.code(), Some(1));
    // sft's verdict counts only where the config has an [sft] section.
    assert!(String::from_utf8_lossy(&output.stderr).contains("run.toml: train would refuse this config"));
    assert!(stdout.contains("sft's verdict is on its defaults"), "{stdout}");
    assert!(stdout.contains("memory plan of run.toml (train)"), "{stdout}");
    assert!(stdout.contains("memory plan of run.toml (sft)"), "{stdout}");
    assert!(stdout.contains("does NOT fit"), "{stdout}");
    // 70B parameters counted from the header.
    assert!(stdout.contains("69501714432 parameters"), "{stdout}");
    write_config(
        dir.path(),
        "per_device_train_batch_size = 16\nbeta = 0.04\n[sft]\nmax_completion_length = 8",
    );
    let output = crpo(dir.path(), &["doctor", "--config", "run.toml"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("train and sft would refuse this config"));

    // A model directory that is not there is named, not planned for.
    std::fs::rename(dir.path().join("model"), dir.path().join("moved")).unwrap();
    let output = crpo(dir.path(), &["doctor", "--config", "run.toml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("model.path") && stderr.contains("no such directory"),
        "{stderr}"
    );
}

#[test]
fn a_run_that_fits_trains_with_gradient_checkpointing_and_logs_its_plan() {
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(&dir.path().join("model"), 0).unwrap();
    write_config(
        dir.path(),
        "per_device_train_batch_size = 4\ngradient_checkpointing = true",
    );
    let output = crpo(dir.path(), &["train", "--config", "run.toml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("memory plan on cpu"), "{stderr}");
    assert!(stderr.contains("checkpointed"), "{stderr}");
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert!(record["peak_rss_bytes"].as_u64().unwrap() > 0);

    let output = crpo(dir.path(), &["doctor", "--config", "run.toml"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("fits:"), "{stdout}");
    // LoRA that selects none of the model's layers would be refused by train: not "fits".
    write_config(
        dir.path(),
        "per_device_train_batch_size = 4\n[model.lora]\ntarget_modules = [\"no_such_proj\"]",
    );
    let output = crpo(dir.path(), &["doctor", "--config", "run.toml"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("model.lora selects none") && !stdout.contains("fits:"),
        "{stdout}"
    );
    // Budgets beyond the model's positions: doctor refuses as train does, before it loads
    // anything (train left an empty run directory; doctor said "fits").
    write_config(dir.path(), "max_prompt_length = 4096");
    std::fs::remove_dir_all(dir.path().join("run")).unwrap();
    let output = crpo(dir.path(), &["doctor", "--config", "run.toml"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("refused: algorithm.max_prompt_length (4096)"),
        "{stdout}"
    );
    let output = crpo(dir.path(), &["train", "--config", "run.toml"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("positions of"));
    assert!(
        !dir.path().join("run").exists(),
        "a refused run leaves no directory"
    );
    // A train-only config that sft's 512-token default would take past the 2048 positions
    // is train's to judge: sft's refusal is printed, not counted.
    write_config(dir.path(), "max_prompt_length = 1600");
    let output = crpo(dir.path(), &["doctor", "--config", "run.toml"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("refused: algorithm.max_prompt_length (1600) + sft.max_completion_length (512)")
            && stdout.contains("not counted"),
        "{stdout}"
    );
}

#[test]
fn the_cold_start_fine_tunes_with_gradient_checkpointing() {
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(&dir.path().join("model"), 0).unwrap();
    // 16 examples of the demo's 512 (each has a reference completion).
    let examples: String = std::fs::read_to_string(demo_data())
        .unwrap()
        .lines()
        .take(16)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("sft.jsonl"), examples).unwrap();
    let config = "[run]\noutput_dir = \"run\"\n[model]\npath = \"model\"\ndevice = \"cpu\"\n[data]\npath = \"sft.jsonl\"\neval_fraction = 0.0\n[[reward.objectives]]\nplugin = \"consistency\"\n[sft]\nper_device_train_batch_size = 4\nmax_completion_length = 32\ngradient_checkpointing = true\n";
    std::fs::write(dir.path().join("run.toml"), config).unwrap();
    let output = crpo(dir.path(), &["sft", "--config", "run.toml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("memory plan on cpu") && stderr.contains("checkpointed"),
        "{stderr}"
    );
    assert!(
        dir.path().join("run/sft/model/model.safetensors").exists(),
        "{stderr}"
    );
}
