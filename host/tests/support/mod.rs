//! Builds the example and fixture plugin libraries once per test process, with the real
//! cargo, into their own target directory (the outer `cargo test` holds the main one).
// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn plugin_target_dir() -> PathBuf {
    workspace_root().join("target").join("plugin-tests")
}

/// The caller's profile, so that an optimised benchmark compares optimised plugins.
const PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

fn cargo_build(args: &[&str], manifest: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .arg("build")
        .arg("--quiet")
        .args((PROFILE == "release").then_some("--release"))
        .arg("--manifest-path")
        .arg(manifest)
        .args(args)
        .arg("--target-dir")
        .arg(plugin_target_dir())
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building plugin libraries from {} failed",
        manifest.display()
    );
}

/// The path of the cdylib built from workspace package `package` (library name `lib`).
pub fn plugin_library(lib: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        let packages = [
            "contraindication-safety",
            "option-coverage",
            "csv-dataset",
            "bigram-policy",
            "qwen2-library",
            "misbehaving-rewards",
            "not-a-crpo-plugin",
            "numbered-reward",
        ];
        let args: Vec<&str> = packages.iter().flat_map(|p| ["-p", p]).collect();
        cargo_build(&args, &root.join("Cargo.toml"));
        for fixture in ["abi-v2", "layout-mismatch"] {
            cargo_build(&[], &root.join("tests/fixtures").join(fixture).join("Cargo.toml"));
        }
        cargo_build(
            &["-p", "legacy-plugin"],
            &root.join("tests/fixtures/sdk-1.0/Cargo.toml"),
        );
        cargo_build(
            &["-p", "legacy-policy"],
            &root.join("tests/fixtures/sdk-1.3/Cargo.toml"),
        );
    });
    // The profile the libraries were just built with: a release benchmark must load the
    // release build, not a debug one left by the tests.
    let path = plugin_target_dir()
        .join(PROFILE)
        .join(format!("lib{lib}.{}", std::env::consts::DLL_EXTENSION));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A fresh directory holding the Python reward plugin (plugins/python-rewards), built on its
/// own: it links the set-up venv's libpython, which no other plugin test needs.
pub fn python_plugin_dir() -> tempfile::TempDir {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let source = BUILT.get_or_init(|| {
        cargo_build(
            &["-p", "crpo-plugins-python"],
            &workspace_root().join("Cargo.toml"),
        );
        plugin_target_dir().join(PROFILE).join(format!(
            "libcrpo_python_rewards.{}",
            std::env::consts::DLL_EXTENSION
        ))
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(source, dir.path().join(source.file_name().unwrap())).unwrap();
    dir
}

/// A fresh directory holding copies of the named libraries.
pub fn plugin_dir(libs: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for lib in libs {
        let source = plugin_library(lib);
        std::fs::copy(&source, dir.path().join(source.file_name().unwrap())).unwrap();
    }
    dir
}

/// The set-up venv's python (`.torch` links to `<venv>/lib/pythonX.Y/site-packages/torch`)
/// if it can import `module`; otherwise why not (the caller prints it and skips).
pub fn venv_python_with(module: &str, setup_flag: &str) -> Result<PathBuf, String> {
    let torch = std::fs::canonicalize(workspace_root().join(".torch"))
        .map_err(|_| "no set-up venv (.torch link); run scripts/setup.sh".to_string())?;
    let python = torch
        .ancestors()
        .nth(4)
        .map(|venv| venv.join("bin/python"))
        .filter(|p| p.exists())
        .ok_or("no python beside the .torch link")?;
    let probe = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .map_err(|e| e.to_string())?;
    if probe.status.success() {
        Ok(python)
    } else {
        Err(format!(
            "{module} is not installed in {} ({setup_flag}=1 scripts/setup.sh)",
            python.display()
        ))
    }
}

/// What `python ARGS…` prints; a failure fails the test with Python's stderr.
pub fn python_output<S: AsRef<std::ffi::OsStr>>(python: &Path, args: &[S]) -> Vec<u8> {
    let output = Command::new(python).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{} failed:\n{}",
        python.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The built-in decoder on `dir` (CPU, f32).
pub fn load_qwen2(dir: &Path) -> crpo_host::rollout::Policy {
    crpo_host::rollout::Policy::load_with(
        &crpo_host::plugins::PluginRegistry::builtin_only(),
        "qwen2",
        dir,
        tch::Device::Cpu,
        tch::Kind::Float,
        &serde_json::Value::Null,
    )
    .unwrap()
}

/// A model directory for the bigram test policies: the tiny preset's tokenizer with a bigram
/// config.json over its vocabulary.
pub fn bigram_model_dir() -> tempfile::TempDir {
    let model = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(model.path(), 0).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.path().join("config.json")).unwrap()).unwrap();
    let vocab = config["vocab_size"].as_i64().unwrap();
    std::fs::write(
        model.path().join("config.json"),
        format!(r#"{{"model_type": "bigram", "vocab_size": {vocab}}}"#),
    )
    .unwrap();
    model
}

/// The middle of a benchmark's rounds.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The reward benchmarks' question: an analgesic for a patient on warfarin, options A–E.
pub fn analgesic_example() -> crpo_sdk::Example {
    crpo_sdk::Example {
        id: "bench".into(),
        prompt: crpo_sdk::Prompt::Text("A 70-year-old man with osteoarthritis takes warfarin and metformin. He is allergic to penicillin. Which analgesic is safest?".into()),
        answer: Some("B".into()),
        options: [("A", "Ibuprofen"), ("B", "Acetaminophen"), ("C", "Naproxen"), ("D", "Ketorolac"), ("E", "Aspirin")]
            .into_iter()
            .map(|(key, text)| crpo_sdk::AnswerOption { key: key.into(), text: text.into() })
            .collect(),
        ..crpo_sdk::Example::default()
    }
}

/// The small algorithm settings of the end-to-end tests: 2 prompts × 2 completions of 8
/// tokens, one update a step.
pub const TINY_ALGORITHM: &str = "num_generations = 2
prompts_per_step = 2
mini_batch_size = 4
gradient_accumulation_steps = 1
max_completion_length = 8
";
