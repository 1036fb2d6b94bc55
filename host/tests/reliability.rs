//! What a careless or hostile user can do to a run, each through the CLI as they would: nothing
//! saved is lost, nothing panics, diverged weights are never checkpointed, a resume never
//! silently changes the run (docs/reliability.md lists every case).

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn crpo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_crpo-host"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `crpo-host args` in `dir`; fails the test on a panic trace or an abort.
fn run(dir: &Path, args: &[&str]) -> Output {
    let output = crpo().args(args).current_dir(dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("panicked") && output.status.code().is_some(),
        "crpo-host {args:?} crashed: {stderr}"
    );
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// A directory with the tiny model (`model/`) and `run.toml` training it quickly on the demo
/// data into `run/`; `extra` adds keys to [run] and further tables.
fn setup(run_keys: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(&dir.path().join("model"), 0).unwrap();
    write_config(dir.path(), run_keys, extra);
    dir
}

fn write_config(dir: &Path, run_keys: &str, extra: &str) {
    let data = repo().join("data/demo");
    let config = format!(
        r#"
[run]
output_dir = "run"
sample_steps = 1
{run_keys}
[model]
path = "model"
device = "cpu"
[data]
path = "{}"
eval_path = "{}"
[reward]
preset = "crpo"
[algorithm]
num_generations = 2
prompts_per_step = 2
mini_batch_size = 4
gradient_accumulation_steps = 1
max_completion_length = 8
beta = 0.0
{extra}
"#,
        data.join("train.jsonl").display(),
        data.join("eval.jsonl").display()
    );
    std::fs::write(dir.join("run.toml"), config).unwrap();
}

/// Replaces the first `from` in `dir/run.toml` (as `setup` wrote it) with `to`.
fn edit_config(dir: &Path, from: &str, to: &str) {
    let path = dir.join("run.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    assert!(config.contains(from), "run.toml has no `{from}`");
    std::fs::write(&path, config.replacen(from, to, 1)).unwrap();
}

fn steps_recorded(run_dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn checkpoint_steps(run_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run_dir.join("checkpoints"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn init_model_never_replaces_a_model_without_overwrite() {
    let dir = setup("", "");
    let weights = dir.path().join("model/model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let refused = run(dir.path(), &["init-model", "--out", "model", "--seed", "5"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("--overwrite"), "{}", stderr(&refused));
    assert_eq!(std::fs::read(&weights).unwrap(), before, "the model is untouched");
    let replaced = run(
        dir.path(),
        &["init-model", "--out", "model", "--seed", "5", "--overwrite"],
    );
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    assert_ne!(std::fs::read(&weights).unwrap(), before);
}

/// Settings that cannot work are refused before any work: every weight 0 (a reward of 0 for
/// every completion trained for nothing), and a demo's `--eval-samples 0` (it trained every
/// arm first).
#[test]
fn settings_that_learn_nothing_are_refused_before_any_step() {
    let dir = setup("max_steps = 1", "");
    let nothing = run(
        dir.path(),
        &[
            "generate",
            "--model",
            "model",
            "--prompt",
            "hi",
            "--max-new-tokens",
            "0",
        ],
    );
    assert_eq!(nothing.status.code(), Some(1), "{}", stderr(&nothing));
    assert!(stderr(&nothing).contains("--max-new-tokens must be at least 1"));
    edit_config(
        dir.path(),
        "preset = \"crpo\"",
        "[[reward.objectives]]\nplugin = \"consistency\"\nweight = 0.0",
    );
    let output = run(dir.path(), &["train", "--config", "run.toml"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("every objective's weight is 0 (consistency)"),
        "{}",
        stderr(&output)
    );
    assert!(!dir.path().join("run/metrics.jsonl").exists());
    edit_config(dir.path(), "max_steps = 1", "max_steps = 0");
    let output = run(dir.path(), &["train", "--config", "run.toml"]);
    assert!(
        stderr(&output).contains("run.max_steps is 0"),
        "{}",
        stderr(&output)
    );
    // A plugin directory the config names that is no directory is named as the config's.
    edit_config(
        dir.path(),
        "max_steps = 0",
        "max_steps = 1\nplugin_dirs = [\"notes.txt\"]",
    );
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let output = run(dir.path(), &["train", "--config", "run.toml"]);
    assert!(
        stderr(&output).contains("run.toml: run.plugin_dirs") && stderr(&output).contains("notes.txt"),
        "{}",
        stderr(&output)
    );
    let demo = run(dir.path(), &["demo", "--out", "demo", "--eval-samples", "0"]);
    assert_eq!(demo.status.code(), Some(1), "{}", stderr(&demo));
    assert!(
        stderr(&demo).contains("--eval-samples must be at least 1"),
        "{}",
        stderr(&demo)
    );
    assert!(!dir.path().join("demo").exists());
}

/// Ctrl-C while init-model writes: nothing half-written is left, not even hidden.
#[test]
fn init_model_stopped_midway_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The 0.5B shape takes seconds to write (2 GB): the signal lands while it does.
    let child = crpo()
        .current_dir(dir.path())
        .args(["init-model", "--out", "big", "--preset", "qwen2.5-0.5b-shape"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let staged = dir.path().join(".tmp-big");
    let started = Instant::now();
    while !staged.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "nothing was staged");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let output = child.wait_with_output().unwrap();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "{text}");
    assert!(text.contains("stopped by SIGINT: big was not written"), "{text}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// An output named like an input (by another spelling, or a directory holding it) is refused
/// before anything is written, `--overwrite` or not: the input would be lost.
#[test]
fn no_command_writes_over_what_it_reads() {
    let dir = setup("", "");
    let path = |name: &str| dir.path().join(name);
    let refused = |args: &[&str], says: &str, kept: &[&str]| {
        let before: Vec<Vec<u8>> = kept.iter().map(|f| std::fs::read(path(f)).unwrap()).collect();
        let output = run(dir.path(), args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(says), "{args:?}: {}", stderr(&output));
        for (file, before) in kept.iter().zip(before) {
            assert_eq!(
                std::fs::read(path(file)).unwrap(),
                before,
                "{args:?}: {file} changed"
            );
        }
    };
    std::fs::write(path("scored.jsonl"), "{\"question\": \"q\", \"options\": {\"A\": \"x\"}, \"answer_idx\": \"A\", \"completion\": \"\\\\boxed{A}\"}\n").unwrap();
    let score = [
        "score",
        "--objectives",
        "accuracy",
        "--input",
        "scored.jsonl",
        "--output",
    ];
    refused(
        &[&score[..], &["./model/../scored.jsonl"]].concat(),
        "would replace the input file",
        &["scored.jsonl"],
    );

    let eval = ["eval", "--config", "run.toml", "--limit", "1"];
    refused(
        &[&eval[..], &["--output", "run.toml"]].concat(),
        "would replace the config",
        &["run.toml"],
    );
    refused(
        &[&eval[..], &["--output-completions", "model/config.json"]].concat(),
        "would replace the config's model",
        &["model/config.json"],
    );
    refused(
        &[&eval[..], &["--output", "model"]].concat(),
        "is a directory",
        &["model/model.safetensors"],
    );
    let both = [
        &eval[..],
        &["--output", "e.json", "--output-completions", "model/../e.json"],
    ]
    .concat();
    refused(&both, "give each its own file", &["run.toml"]);
    refused(
        &[&eval[..], &["--output", "no/such/dir/e.json"]].concat(),
        "does not exist (create it first)",
        &["run.toml"],
    );
    // A file the user saved is not an earlier report or completions file: kept. An earlier
    // one is replaced.
    std::fs::write(path("notes.txt"), "my notes\n").unwrap();
    for flag in ["--output", "--output-completions"] {
        refused(
            &[&eval[..], &[flag, "notes.txt"]].concat(),
            "exists and is not an earlier eval",
            &["notes.txt"],
        );
    }
    let written = [
        &eval[..],
        &["--output", "e.json", "--output-completions", "c.jsonl"],
    ]
    .concat();
    for _ in 0..2 {
        let output = run(dir.path(), &written);
        assert!(output.status.success(), "{}", stderr(&output));
    }

    std::fs::create_dir(path("run")).unwrap();
    std::fs::write(path("run/metrics.jsonl"), "{\"step\": 1}\n").unwrap();
    refused(
        &["report", "run", "--out", "run/metrics.jsonl"],
        "is not an earlier crpo report",
        &["run/metrics.jsonl"],
    );

    std::fs::create_dir(path("adapter")).unwrap();
    let adapter_config = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "base_model_name_or_path": "model"}"#;
    std::fs::write(path("adapter/adapter_config.json"), adapter_config).unwrap();
    let merge = ["merge-lora", "--adapter", "adapter", "--overwrite", "--out"];
    refused(
        &[&merge[..], &["adapter"]].concat(),
        "would replace the adapter",
        &["adapter/adapter_config.json"],
    );
    refused(
        &[&merge[..], &["model"]].concat(),
        "would replace the base model",
        &["model/model.safetensors"],
    );
    refused(
        &[&merge[..], &["adapter/adapter_config.json"]].concat(),
        "is a file",
        &["adapter/adapter_config.json"],
    );
}

/// `--overwrite` replaces a model directory, never a file, a directory holding anything else,
/// or the directory the command runs in; a benchmark's workload never replaces the model.
#[test]
fn model_outputs_replace_only_models() {
    let dir = setup("", "");
    let path = |name: &str| dir.path().join(name);
    let refused = |args: &[&str], says: &str, kept: &str| {
        let before = std::fs::read(path(kept)).unwrap();
        let output = run(dir.path(), args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(says), "{args:?}: {}", stderr(&output));
        assert_eq!(
            std::fs::read(path(kept)).unwrap(),
            before,
            "{args:?}: {kept} changed"
        );
    };
    std::fs::create_dir_all(path("project/src")).unwrap();
    std::fs::write(path("project/src/main.rs"), "fn main() {}").unwrap();
    let init = ["init-model", "--overwrite", "--out"];
    refused(
        &[&init[..], &["project"]].concat(),
        "not a model directory",
        "project/src/main.rs",
    );
    std::fs::write(path("notes.txt"), "keep").unwrap();
    refused(&[&init[..], &["notes.txt"]].concat(), "is a file", "notes.txt");
    std::fs::write(path("model/thesis.tex"), "keep").unwrap();
    refused(
        &[&init[..], &["model"]].concat(),
        "`thesis.tex`",
        "model/thesis.tex",
    );
    let here = crpo()
        .args(["init-model", "--overwrite", "--out", "."])
        .current_dir(path("model"))
        .output()
        .unwrap();
    assert!(
        stderr(&here).contains("the directory this command runs in"),
        "{}",
        stderr(&here)
    );
    assert!(path("model/thesis.tex").exists() && !path(".tmp-model").exists());
    let bench = [
        "bench-rollout",
        "--model",
        "model",
        "--min-length",
        "1",
        "--max-length",
        "2",
    ];
    refused(
        &[&bench[..], &["--workload-out", "model/config.json"]].concat(),
        "would replace the model",
        "model/config.json",
    );
    refused(
        &[&bench[..], &["--workload-out", "notes.txt"]].concat(),
        "is not an earlier workload",
        "notes.txt",
    );
    // An adapter's base model is an input of eval too.
    crpo_plugins_policy::presets::write_tiny(&path("base"), 1).unwrap();
    std::fs::create_dir(path("adapter")).unwrap();
    let adapter_config = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "base_model_name_or_path": "base"}"#;
    std::fs::write(path("adapter/adapter_config.json"), adapter_config).unwrap();
    let eval = ["eval", "--config", "run.toml", "--model", "adapter"];
    refused(
        &[&eval[..], &["--output-completions", "base/model.safetensors"]].concat(),
        "an adapter's base model",
        "base/model.safetensors",
    );
    // An empty prompt has nothing to continue; a NaN temperature samples nothing.
    let generate = ["generate", "--model", "model", "--device", "cpu", "--prompt"];
    let output = run(dir.path(), &[&generate[..], &[""]].concat());
    assert!(
        stderr(&output).contains("--prompt is empty"),
        "{}",
        stderr(&output)
    );
    let output = run(
        dir.path(),
        &[&generate[..], &["hi", "--temperature", "NaN"]].concat(),
    );
    assert!(
        stderr(&output).contains("--temperature must be"),
        "{}",
        stderr(&output)
    );
}

/// Data kept where the run writes its samples would be appended to on --resume (and a fresh
/// start told the user to remove it as an earlier run's).
#[test]
fn train_refuses_data_in_the_place_of_its_own_samples() {
    let dir = setup("max_steps = 1", "");
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let data = std::fs::read_to_string(repo().join("data/demo/train.jsonl")).unwrap();
    std::fs::write(run_dir.join("samples.jsonl"), &data).unwrap();
    edit_config(
        dir.path(),
        &repo().join("data/demo/train.jsonl").display().to_string(),
        "run/samples.jsonl",
    );
    for resume in [false, true] {
        let args = ["train", "--config", "run.toml", "--resume"];
        let output = run(dir.path(), &args[..3 + resume as usize]);
        assert_eq!(output.status.code(), Some(1));
        assert!(
            stderr(&output).contains("is the samples.jsonl this run writes in its directory"),
            "{}",
            stderr(&output)
        );
    }
    assert_eq!(
        std::fs::read_to_string(run_dir.join("samples.jsonl")).unwrap(),
        data
    );
}

#[test]
fn train_refuses_an_earlier_runs_files_and_a_resume_with_nothing_to_resume() {
    let dir = setup("max_steps = 1", "");
    let run_dir = dir.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::write(run_dir.join("metrics.jsonl"), "{\"step\": 1}\n").unwrap();
    let fresh = run(dir.path(), &["train", "--config", "run.toml"]);
    assert_eq!(fresh.status.code(), Some(1));
    assert!(
        stderr(&fresh).contains("metrics.jsonl")
            && stderr(&fresh).contains("no checkpoint to continue it from"),
        "{}",
        stderr(&fresh)
    );
    let resume = run(dir.path(), &["train", "--config", "run.toml", "--resume"]);
    assert_eq!(resume.status.code(), Some(1));
    assert!(
        stderr(&resume).contains("no checkpoint to resume from"),
        "{}",
        stderr(&resume)
    );
    assert_eq!(
        std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap(),
        "{\"step\": 1}\n",
        "the earlier run's metrics are untouched"
    );
    // Empty files a refused start left behind hold nothing: they do not block the next start.
    let left = dir.path().join("left");
    std::fs::create_dir(&left).unwrap();
    std::fs::write(left.join("metrics.jsonl"), "").unwrap();
    std::fs::write(left.join("samples.jsonl"), "").unwrap();
    let started = run(
        dir.path(),
        &["train", "--config", "run.toml", "--output-dir", "left"],
    );
    assert!(started.status.success(), "{}", stderr(&started));
    // A start killed before its first step (its run_info.json and empty logs, no checkpoint),
    // resubmitted with --resume as a requeue script does: it starts from the beginning.
    std::fs::remove_dir_all(left.join("checkpoints")).unwrap();
    std::fs::write(left.join("metrics.jsonl"), "").unwrap();
    std::fs::write(left.join("samples.jsonl"), "").unwrap();
    let resume_into = |output_dir: &str| {
        run(
            dir.path(),
            &[
                "train",
                "--config",
                "run.toml",
                "--output-dir",
                output_dir,
                "--resume",
            ],
        )
    };
    let requeued = resume_into("left");
    assert!(requeued.status.success(), "{}", stderr(&requeued));
    assert!(
        stderr(&requeued).contains("starting from the beginning"),
        "{}",
        stderr(&requeued)
    );
    // Killed while loading the model: only its lock file is there.
    let loading = dir.path().join("loading");
    std::fs::create_dir(&loading).unwrap();
    std::fs::write(loading.join(".crpo-run.lock"), "").unwrap();
    let requeued = resume_into("loading");
    assert!(requeued.status.success(), "{}", stderr(&requeued));
    // Where no run started, --resume is a mistyped directory: refused.
    let nowhere = resume_into("nowhere");
    assert_eq!(nowhere.status.code(), Some(1));
    assert!(
        stderr(&nowhere).contains("no run started there"),
        "{}",
        stderr(&nowhere)
    );
}

#[test]
fn sft_never_replaces_the_base_model_or_files_a_user_saved() {
    let dir = setup("", "");
    let d = dir.path();
    let sft_into = |output_dir: &str| {
        write_config(d, "", &format!("[sft]\noutput_dir = \"{output_dir}\""));
        run(d, &["sft", "--config", "run.toml"])
    };
    let weights = std::fs::read(d.join("model/model.safetensors")).unwrap();
    // The base model is `<sft.output_dir>/model`, which the fine-tuned model would replace.
    let base = sft_into(".");
    assert_eq!(base.status.code(), Some(1));
    assert!(
        stderr(&base).contains("would replace the base model"),
        "{}",
        stderr(&base)
    );
    assert_eq!(std::fs::read(d.join("model/model.safetensors")).unwrap(), weights);
    // A user's files in `<sft.output_dir>/model`, or a run_info.json crpo did not write.
    for (output_dir, file, says) in [
        ("mine", "mine/model/thesis.tex", "already holds a model"),
        ("notes", "notes/run_info.json", "not a crpo run's run_info.json"),
    ] {
        std::fs::create_dir_all(d.join(file).parent().unwrap()).unwrap();
        std::fs::write(d.join(file), "{\"mine\": true}").unwrap();
        let refused = sft_into(output_dir);
        assert!(stderr(&refused).contains(says), "{}", stderr(&refused));
        assert_eq!(std::fs::read_to_string(d.join(file)).unwrap(), "{\"mine\": true}");
    }
    // --resume where a start stopped before its first step starts from the beginning: it too
    // may not replace a model it did not write.
    std::fs::write(d.join("mine/.crpo-run.lock"), "").unwrap();
    write_config(d, "", "[sft]\noutput_dir = \"mine\"");
    let resumed = run(d, &["sft", "--config", "run.toml", "--resume"]);
    assert!(
        stderr(&resumed).contains("already holds a model"),
        "{}",
        stderr(&resumed)
    );
    assert_eq!(
        std::fs::read_to_string(d.join("mine/model/thesis.tex")).unwrap(),
        "{\"mine\": true}"
    );
}

#[test]
fn a_resume_refuses_config_changes_that_change_the_run_unless_allowed() {
    let dir = setup("max_steps = 1\nsave_steps = 1", "");
    assert!(run(dir.path(), &["train", "--config", "run.toml"])
        .status
        .success());
    // Changed seed and learning rate: refused, each named with both values.
    write_config(
        dir.path(),
        "max_steps = 2\nsave_steps = 1\nseed = 7",
        "learning_rate = 5e-3",
    );
    let refused = run(dir.path(), &["train", "--config", "run.toml", "--resume"]);
    let text = stderr(&refused);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text.contains("run.seed: 0 in the checkpoint, 7 now") && text.contains("algorithm.learning_rate"),
        "{text}"
    );
    assert_eq!(steps_recorded(&dir.path().join("run")), vec![1], "nothing ran");
    // LoRA added to a full fine-tuning run: named as a change, the checkpoint kept usable.
    edit_config(
        dir.path(),
        "[data]",
        "[model.lora]\nr = 2\nlora_alpha = 4\n[data]",
    );
    let text = stderr(&run(dir.path(), &["train", "--config", "run.toml", "--resume"]));
    assert!(
        text.contains("trained the whole model and this config adds [model.lora]"),
        "{text}"
    );
    // Not even when allowed: the run would go on with the checkpoint's weights while its
    // config said LoRA.
    let text = stderr(&run(
        dir.path(),
        &[
            "train",
            "--config",
            "run.toml",
            "--resume",
            "--allow-config-change",
        ],
    ));
    assert!(
        text.contains("model.lora") && text.contains("even with --allow-config-change"),
        "{text}"
    );
    let kept = checkpoint_steps(&dir.path().join("run"));
    assert!(
        kept.len() == 1 && !kept[0].starts_with("unusable"),
        "{kept:?}: {text}"
    );
    write_config(
        dir.path(),
        "max_steps = 2\nsave_steps = 1\nseed = 7",
        "learning_rate = 5e-3",
    );
    // Allowed: recorded in the run.
    let allowed = run(
        dir.path(),
        &[
            "train",
            "--config",
            "run.toml",
            "--resume",
            "--allow-config-change",
        ],
    );
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    let record = std::fs::read_to_string(dir.path().join("run/resumes.jsonl")).unwrap();
    assert!(
        record.contains("run.seed") && record.contains("\"step\":1"),
        "{record}"
    );
    // Only a longer run (a safe key): resumes, and says from where.
    write_config(
        dir.path(),
        "max_steps = 3\nsave_steps = 1\nseed = 7",
        "learning_rate = 5e-3",
    );
    let longer = run(dir.path(), &["train", "--config", "run.toml", "--resume"]);
    assert!(longer.status.success(), "{}", stderr(&longer));
    assert!(stderr(&longer).contains("resuming from"), "{}", stderr(&longer));
    assert_eq!(steps_recorded(&dir.path().join("run")), vec![1, 2, 3]);
    // A max_steps below where the run is: said, not reported as trained.
    write_config(
        dir.path(),
        "max_steps = 1\nsave_steps = 1\nseed = 7",
        "learning_rate = 5e-3",
    );
    let shorter = run(dir.path(), &["train", "--config", "run.toml", "--resume"]);
    assert_eq!(shorter.status.code(), Some(1));
    assert!(
        stderr(&shorter).contains("at step 3 already, beyond run.max_steps = 1"),
        "{}",
        stderr(&shorter)
    );
    assert_eq!(steps_recorded(&dir.path().join("run")), vec![1, 2, 3]);
}

/// The same config over other files: a model re-initialised in place under `model.path` (the
/// frozen reference) or a regenerated data file made the resumed run another one, in silence.
#[test]
fn a_resume_refuses_a_model_or_data_file_changed_under_the_same_path() {
    let dir = setup("", "");
    let d = dir.path();
    let demo = repo().join("data/demo/train.jsonl");
    std::fs::copy(&demo, d.join("train.jsonl")).unwrap();
    let configure = |max_steps: usize| {
        write_config(d, &format!("max_steps = {max_steps}\nsave_steps = 1"), "");
        let config = std::fs::read_to_string(d.join("run.toml"))
            .unwrap()
            .replace("beta = 0.0", "beta = 0.04")
            .replace(&demo.display().to_string(), "train.jsonl");
        std::fs::write(d.join("run.toml"), config).unwrap();
    };
    configure(1);
    let first = run(d, &["train", "--config", "run.toml"]);
    assert!(first.status.success(), "{}", stderr(&first));
    configure(2);

    crpo_plugins_policy::presets::write_tiny(&d.join("model"), 9).unwrap();
    let refused = run(d, &["train", "--config", "run.toml", "--resume"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("model.path (its files): \"sha256 "),
        "{}",
        stderr(&refused)
    );
    crpo_plugins_policy::presets::write_tiny(&d.join("model"), 0).unwrap();

    let data = std::fs::read_to_string(d.join("train.jsonl")).unwrap();
    let fewer: String = data.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(d.join("train.jsonl"), fewer).unwrap();
    let refused = run(d, &["train", "--config", "run.toml", "--resume"]);
    assert!(
        stderr(&refused).contains("data.path (its contents)") && !stderr(&refused).contains("model.path"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(steps_recorded(&d.join("run")), vec![1], "nothing ran");
    let allowed = run(
        d,
        &[
            "train",
            "--config",
            "run.toml",
            "--resume",
            "--allow-config-change",
        ],
    );
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    let record = std::fs::read_to_string(d.join("run/resumes.jsonl")).unwrap();
    assert!(record.contains("data.path (its contents)"), "{record}");
}

#[test]
fn a_corrupt_latest_checkpoint_falls_back_to_the_previous_one_with_a_warning() {
    let dir = setup("max_steps = 2\nsave_steps = 1\nsave_total_limit = 5", "");
    assert!(run(dir.path(), &["train", "--config", "run.toml"])
        .status
        .success());
    let run_dir = dir.path().join("run");
    let checkpoints = run_dir.join("checkpoints");
    // A truncated model in the latest checkpoint.
    let weights = checkpoints.join("step-000002/model/model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    write_config(
        dir.path(),
        "max_steps = 3\nsave_steps = 1\nsave_total_limit = 5",
        "",
    );
    let resumed = run(dir.path(), &["train", "--config", "run.toml", "--resume"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let text = stderr(&resumed);
    assert!(
        text.contains("step-000002 is unusable") && text.contains("resuming from the earlier"),
        "{text}"
    );
    assert_eq!(
        steps_recorded(&run_dir),
        vec![1, 2, 3],
        "step 2 is run again, once"
    );
    assert_eq!(
        checkpoint_steps(&run_dir),
        [
            "step-000001",
            "step-000002",
            "step-000003",
            "unusable-step-000002"
        ]
    );
    // A bad trainer state, then a missing optimizer: each passed over in turn.
    std::fs::write(checkpoints.join("step-000003/trainer_state.json"), "{").unwrap();
    std::fs::remove_file(checkpoints.join("step-000002/optimizer.safetensors")).unwrap();
    write_config(
        dir.path(),
        "max_steps = 4\nsave_steps = 1\nsave_total_limit = 5",
        "",
    );
    let resumed = run(dir.path(), &["train", "--config", "run.toml", "--resume"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains("resuming from the earlier"),
        "{}",
        stderr(&resumed)
    );
    assert_eq!(steps_recorded(&run_dir), vec![1, 2, 3, 4]);
    // A trainer state edited to another step, and a config that does not parse: neither is
    // trusted (the step would cut the metrics back to it), each passed over in turn.
    let state_path = checkpoints.join("step-000004/trainer_state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["step"] = 99.into();
    std::fs::write(&state_path, state.to_string()).unwrap();
    std::fs::write(checkpoints.join("step-000003/config.toml"), "not = [toml").unwrap();
    let resumed = run(dir.path(), &["train", "--config", "run.toml", "--resume"]);
    let text = stderr(&resumed);
    assert!(resumed.status.success(), "{text}");
    assert!(
        text.contains("its trainer state says step 99, its name step 4")
            && text.contains("config.toml is not a config")
            && text.contains("resuming from the earlier"),
        "{text}"
    );
    assert_eq!(steps_recorded(&run_dir), vec![1, 2, 3, 4]);
}

/// A checkpoint whose model lost its tokenizer_config.json resumed with another chat template
/// (the tokenizer's default), in silence.
#[test]
fn a_checkpoint_missing_a_file_it_was_written_with_is_passed_over() {
    let dir = setup("max_steps = 2\nsave_steps = 1\nsave_total_limit = 5", "");
    let first = run(dir.path(), &["train", "--config", "run.toml"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let run_dir = dir.path().join("run");
    std::fs::remove_file(run_dir.join("checkpoints/step-000002/model/tokenizer_config.json")).unwrap();
    write_config(
        dir.path(),
        "max_steps = 3\nsave_steps = 1\nsave_total_limit = 5",
        "",
    );
    let resumed = run(dir.path(), &["train", "--config", "run.toml", "--resume"]);
    let text = stderr(&resumed);
    assert!(resumed.status.success(), "{text}");
    assert!(
        text.contains("tokenizer_config.json is missing (the checkpoint was written with it)")
            && text.contains("resuming from the earlier"),
        "{text}"
    );
    assert_eq!(steps_recorded(&run_dir), vec![1, 2, 3]);
}

#[test]
fn a_diverging_run_stops_before_its_weights_are_checkpointed() {
    let dir = setup("max_steps = 3\nsave_steps = 1", "learning_rate = 1e9");
    let output = run(dir.path(), &["train", "--config", "run.toml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("diverged"), "{}", stderr(&output));
    assert!(
        checkpoint_steps(&dir.path().join("run")).is_empty(),
        "diverged weights were checkpointed"
    );
    // lr = inf is refused before anything runs.
    write_config(dir.path(), "max_steps = 3\nsave_steps = 1", "learning_rate = inf");
    let output = run(dir.path(), &["train", "--config", "run.toml"]);
    assert!(stderr(&output).contains("algorithm.learning_rate must be a finite number"));
}

/// The tiny model's weights with one value made NaN (a diverged or damaged model).
fn poison(model: &Path) {
    let path = model.join("model.safetensors");
    let mut tensors = tch::Tensor::read_safetensors(&path).unwrap();
    let (_, first) = &mut tensors[0];
    let _ = first.view([-1]).get(0).fill_(f64::NAN);
    tch::Tensor::write_safetensors(&tensors, &path).unwrap();
}

#[test]
fn a_model_with_non_finite_weights_is_refused_at_load() {
    let dir = setup("max_steps = 1", "");
    poison(&dir.path().join("model"));
    for args in [
        vec!["generate", "--model", "model", "--prompt", "chest pain"],
        vec!["train", "--config", "run.toml"],
        vec!["eval", "--config", "run.toml", "--model", "model", "--limit", "2"],
    ] {
        let output = run(dir.path(), &args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&output).contains("non-finite values"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    // A start refused at load leaves no run directory behind (it left one holding its lock).
    assert!(!dir.path().join("run").exists());
}

/// A model another tool made without any EOS (none in config.json, generation_config.json or
/// tokenizer_config.json): generation runs each completion to its budget, as transformers'
/// generate does; sft, which ends each reference with one, refuses before it starts.
#[test]
fn a_model_without_an_eos_generates_to_the_budget_and_sft_refuses_it() {
    let dir = setup("max_steps = 1", "");
    let model = dir.path().join("model");
    for file in ["config.json", "generation_config.json", "tokenizer_config.json"] {
        let path = model.join(file);
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let map = json.as_object_mut().unwrap();
        map.remove("eos_token_id");
        map.remove("eos_token");
        std::fs::write(&path, json.to_string()).unwrap();
    }
    let output = run(
        dir.path(),
        &[
            "generate",
            "--model",
            "model",
            "--prompt",
            "chest pain",
            "--max-new-tokens",
            "6",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("no EOS token"), "{}", stderr(&output));
    let output = run(dir.path(), &["sft", "--config", "run.toml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("sft ends each reference with one"),
        "{}",
        stderr(&output)
    );
    assert!(!dir.path().join("run").exists());
}

#[test]
fn a_tokenizer_beyond_the_models_vocabulary_is_refused_at_load() {
    let dir = setup("max_steps = 1", "");
    let path = dir.path().join("model/tokenizer.json");
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tokenizer["added_tokens"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": 5000, "content": "<|extra|>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    for args in [
        vec!["generate", "--model", "model", "--prompt", "pain <|extra|>"],
        vec!["train", "--config", "run.toml"],
    ] {
        let output = run(dir.path(), &args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&output).contains("`<|extra|>`") && stderr(&output).contains("vocabulary"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn budgets_beyond_the_models_positions_and_sampling_without_temperature_are_refused() {
    let dir = setup("max_steps = 1", "");
    edit_config(dir.path(), "[reward]", "max_prompt_length = 100000\n[reward]");
    let output = run(dir.path(), &["train", "--config", "run.toml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("max_position_embeddings"),
        "{}",
        stderr(&output)
    );
    write_config(dir.path(), "max_steps = 1", "temperature = 0.0");
    let output = run(dir.path(), &["train", "--config", "run.toml"]);
    assert!(
        stderr(&output).contains("algorithm.temperature must be > 0"),
        "{}",
        stderr(&output)
    );
    write_config(dir.path(), "max_steps = 1", "");
    edit_config(dir.path(), "num_generations = 2", "num_generations = 0");
    let output = run(dir.path(), &["train", "--config", "run.toml"]);
    assert!(
        stderr(&output).contains("num_generations must be at least 2 (it is 0)"),
        "{}",
        stderr(&output)
    );
    // The evaluations' budget is checked at start, not at the first evaluation; nothing is left.
    write_config(
        dir.path(),
        "max_steps = 1\neval_steps = 1",
        "[eval]\nmax_completion_length = 100000",
    );
    let output = run(dir.path(), &["train", "--config", "run.toml"]);
    assert!(
        stderr(&output).contains("eval.max_completion_length"),
        "{}",
        stderr(&output)
    );
    assert!(!dir.path().join("run/metrics.jsonl").exists());
}

#[test]
fn a_dataset_line_that_is_not_utf8_is_named() {
    let dir = setup("max_steps = 1", "");
    let mut data = std::fs::read(repo().join("data/demo/train.jsonl")).unwrap();
    let third_line = data
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(1)
        .unwrap()
        .0
        + 1;
    data.insert(third_line + 5, 0xff);
    std::fs::write(dir.path().join("train.jsonl"), data).unwrap();
    let config = std::fs::read_to_string(dir.path().join("run.toml")).unwrap();
    let config = config.replacen(
        &format!("path = \"{}\"", repo().join("data/demo/train.jsonl").display()),
        "path = \"train.jsonl\"",
        1,
    );
    std::fs::write(dir.path().join("run.toml"), config).unwrap();
    let output = run(dir.path(), &["train", "--config", "run.toml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("train.jsonl: line 3 is not UTF-8") && stderr(&output).contains("column 6"),
        "{}",
        stderr(&output)
    );
}

fn spawn_train(dir: &Path, resume: bool) -> Child {
    let mut command = crpo();
    command.args(["train", "--config", "run.toml"]).current_dir(dir);
    if resume {
        command.arg("--resume");
    }
    command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn sigterm_finishes_the_step_writes_a_checkpoint_and_the_run_resumes() {
    let dir = setup("max_steps = 400\nsave_steps = 1000", "");
    let run_dir = dir.path().join("run");
    let child = spawn_train(dir.path(), false);
    let started = Instant::now();
    while !run_dir.join("metrics.jsonl").exists()
        || std::fs::read_to_string(run_dir.join("metrics.jsonl"))
            .unwrap()
            .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no step was recorded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A second start into the directory while the run holds it is refused before it
    // writes anything (a double launch would interleave two runs' metrics).
    let second = run(dir.path(), &["train", "--config", "run.toml", "--resume"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("in use by another crpo-host run"),
        "{}",
        stderr(&second)
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(128 + libc::SIGTERM), "{text}");
    assert!(text.contains("stopped by SIGTERM after step"), "{text}");
    // Said when it arrives, not only at the step's end (a step may wait on a hung plugin).
    assert!(
        text.contains("SIGTERM received: the run stops after the step in progress"),
        "{text}"
    );
    let steps = steps_recorded(&run_dir);
    let last = *steps.last().unwrap();
    assert!(last < 400, "the run stopped early");
    assert_eq!(checkpoint_steps(&run_dir), [format!("step-{last:06}")]);
    write_config(
        dir.path(),
        &format!("max_steps = {}\nsave_steps = 1000", last + 1),
        "",
    );
    let resumed = spawn_train(dir.path(), true).wait_with_output().unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(steps_recorded(&run_dir), (1..=last + 1).collect::<Vec<_>>());
}

/// AdamW as the defaults configure it.
fn adam_settings() -> crpo_host::train::optimizer::AdamWSettings {
    crpo_host::train::config::AlgorithmConfig::default().adam_settings()
}

fn tiny_policy(dir: &Path) -> crpo_host::rollout::Policy {
    support::load_qwen2(dir)
}

#[test]
fn a_long_prompt_loses_the_start_of_its_question_never_the_template_or_system_prompt() {
    use crpo_host::train::config::{default_prompt_template, PromptTruncation};
    use crpo_host::train::data::PromptFormat;
    use crpo_sdk::{AnswerOption, Example, Prompt};
    let dir = setup("", "");
    let policy = tiny_policy(&dir.path().join("model"));
    let example = Example {
        id: "q-long".into(),
        prompt: Prompt::Text("A 60-year-old man has chest pain radiating to the left arm. ".repeat(40)),
        options: vec![
            AnswerOption {
                key: "A".into(),
                text: "Myocardial infarction".into(),
            },
            AnswerOption {
                key: "B".into(),
                text: "Pericarditis".into(),
            },
        ],
        ..Example::default()
    };
    let format = |truncation| PromptFormat {
        template: default_prompt_template(),
        system: Some("You are a careful clinician.".into()),
        max_tokens: 80,
        truncation,
    };
    let tokenizer = &policy.tokenizer;
    let cut = format(PromptTruncation::Left)
        .render(tokenizer, &example)
        .unwrap()
        .unwrap();
    assert!(cut.truncated && cut.ids.len() <= 80, "{} tokens", cut.ids.len());
    assert_eq!(
        cut.ids,
        tokenizer.encode(&cut.text).unwrap(),
        "the text logged is what the model saw"
    );
    let whole = format(PromptTruncation::Left);
    let uncut = tokenizer
        .render_chat(
            &crpo_host::train::data::messages(&example, &whole.template, whole.system.as_deref()),
            true,
        )
        .unwrap();
    let system_end =
        uncut.find("You are a careful clinician.").unwrap() + "You are a careful clinician.".len();
    let options_start = uncut.find("A. Myocardial").unwrap();
    assert!(cut.text.starts_with(&uncut[..system_end]), "{}", cut.text);
    assert!(cut.text.ends_with(&uncut[options_start..]), "{}", cut.text);

    assert_eq!(
        format(PromptTruncation::Skip)
            .render(tokenizer, &example)
            .unwrap(),
        None
    );
    let err = format(PromptTruncation::Error)
        .render(tokenizer, &example)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("q-long") && err.contains("algorithm.max_prompt_length = 80"),
        "{err}"
    );
    // A question of megabytes is cut by characters before it is tokenized: the same end.
    let huge = Example {
        prompt: Prompt::Text(
            "x ".repeat(1_000_000) + "A 60-year-old man has chest pain radiating to the left arm. ",
        ),
        ..example.clone()
    };
    let cut_huge = format(PromptTruncation::Left)
        .render(tokenizer, &huge)
        .unwrap()
        .unwrap();
    assert!(cut_huge.truncated && cut_huge.ids.len() <= 80);
    assert!(
        cut_huge.text.ends_with(&uncut[options_start..]),
        "{}",
        cut_huge.text
    );
    assert_eq!(
        format(PromptTruncation::Skip).render(tokenizer, &huge).unwrap(),
        None
    );
    // Measuring (data check) tokenizes a prompt once, and a question of megabytes not at all:
    // its length is known from below.
    use crpo_host::train::data::PromptLength;
    let measured = format(PromptTruncation::Error)
        .measure(tokenizer, &example)
        .unwrap();
    let full = tokenizer.encode(&uncut).unwrap().len();
    assert_eq!(measured.length, PromptLength::Exact(full));
    assert!(full > 80 && measured.rendered.is_err());
    let measured = format(PromptTruncation::Left).measure(tokenizer, &huge).unwrap();
    assert!(
        matches!(measured.length, PromptLength::AtLeast(n) if n > 80 && n <= 2_000_000 / 256 + 1),
        "{:?}",
        measured.length
    );
    assert_eq!(measured.rendered.unwrap().unwrap(), cut_huge);
    let measured = format(PromptTruncation::Skip).measure(tokenizer, &huge).unwrap();
    assert!(matches!(measured.length, PromptLength::AtLeast(_)) && measured.rendered.unwrap().is_none());
    let short = Example {
        prompt: Prompt::Text("Chest pain.".into()),
        id: "q-short".into(),
        ..example.clone()
    };
    let kept = format(PromptTruncation::Skip)
        .admit(tokenizer, vec![example, short], "training")
        .unwrap();
    assert_eq!(
        kept.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["q-short"]
    );
}

#[test]
fn a_non_finite_loss_skips_the_update_leaving_weights_and_optimizer_untouched() {
    use crpo_host::train::config::AlgorithmConfig;
    use crpo_host::train::optimizer::AdamW;
    use crpo_host::train::update::{update_policy, Batch, Reference};
    let dir = setup("", "");
    let policy = tiny_policy(&dir.path().join("model"));
    let settings = adam_settings();
    let mut optimizer = AdamW::new(policy.parameters(), settings);
    let before: Vec<tch::Tensor> = policy
        .parameters()
        .iter()
        .map(|(_, p)| p.detach().copy())
        .collect();
    let prompts = vec![vec![5i64, 6, 7], vec![5, 6, 7]];
    let completions = vec![vec![8i64, 9], vec![10, 11, 12]];
    let algorithm = AlgorithmConfig {
        mini_batch_size: 2,
        gradient_accumulation_steps: 1,
        ..AlgorithmConfig::default()
    };
    let batch = |advantages| Batch {
        prompts: &prompts,
        completions: &completions,
        advantages,
        truncated: &[false, false],
    };
    let skipped = update_policy(
        &policy,
        Reference::None,
        &mut optimizer,
        &batch(&[f32::NAN, 1.0]),
        &algorithm,
        1,
        10,
        None,
    )
    .unwrap();
    assert!(skipped.nonfinite && skipped.updates == 0);
    assert_eq!(optimizer.steps, 0, "the optimizer state is untouched");
    for ((name, after), before) in policy.parameters().iter().zip(&before) {
        assert!(after.equal(before), "{name} changed");
    }
    // The same batch with finite advantages updates (so the check above can fail).
    let taken = update_policy(
        &policy,
        Reference::None,
        &mut optimizer,
        &batch(&[-1.0, 1.0]),
        &algorithm,
        2,
        10,
        None,
    )
    .unwrap();
    assert!(!taken.nonfinite && taken.updates == 1 && optimizer.steps == 1);
    assert!(policy
        .parameters()
        .iter()
        .zip(&before)
        .any(|((_, after), before)| !after.equal(before)));
}

#[test]
fn an_objective_isolated_in_a_worker_trains_and_its_crash_fails_the_run_cleanly() {
    let plugins = support::plugin_dir(&["misbehaving_rewards"]);
    let objective = |fault: &str| {
        format!(
            "[[reward.objectives]]\nplugin = \"misbehaving\"\nweight = 0.5\noptions = {{ fault = \"{fault}\" }}\nisolation = \"process\"\ntimeout_s = 60\n"
        )
    };
    let dir = setup(
        &format!("max_steps = 1\nplugin_dirs = [\"{}\"]", plugins.path().display()),
        "",
    );
    let config = std::fs::read_to_string(dir.path().join("run.toml")).unwrap();
    let with = |fault: &str| config.replace("[algorithm]", &format!("{}[algorithm]", objective(fault)));
    std::fs::write(dir.path().join("run.toml"), with("none")).unwrap();
    let trained = run(dir.path(), &["train", "--config", "run.toml"]);
    assert!(trained.status.success(), "{}", stderr(&trained));
    std::fs::write(dir.path().join("run.toml"), with("abort")).unwrap();
    let crashed = run(
        dir.path(),
        &["train", "--config", "run.toml", "--output-dir", "crashed"],
    );
    assert_eq!(crashed.status.code(), Some(1), "{}", stderr(&crashed));
    let text = stderr(&crashed);
    // The error names the step and the example (its file:line) it was scoring.
    let example = text
        .split_once("error: training step 1: scoring example `")
        .and_then(|(_, rest)| rest.split_once("`: objective `misbehaving`"))
        .map(|(example, _)| example);
    assert!(
        example.is_some_and(|e| e.contains(".jsonl:")) && text.contains("died of signal 6"),
        "{text}"
    );
}

/// A worker that hangs, with retries: SIGTERM waited for every retry's timeout (retries had no
/// bound, so a run could never stop). The call in flight keeps its timeout (a busy worker's
/// step may still finish); no retry follows.
#[test]
fn sigterm_stops_retrying_a_hanging_reward_worker() {
    let plugins = support::plugin_dir(&["misbehaving_rewards"]);
    let dir = setup(
        &format!("max_steps = 1\nplugin_dirs = [\"{}\"]", plugins.path().display()),
        "",
    );
    let config = std::fs::read_to_string(dir.path().join("run.toml")).unwrap();
    let objective = "[[reward.objectives]]\nplugin = \"misbehaving\"\noptions = { fault = \"hang\" }\nisolation = \"process\"\ntimeout_s = 8\nretries = RETRIES\n[algorithm]";
    let with = |retries: &str| config.replace("[algorithm]", &objective.replace("RETRIES", retries));
    std::fs::write(dir.path().join("run.toml"), with("11")).unwrap();
    let refused = run(dir.path(), &["train", "--config", "run.toml"]);
    assert!(
        stderr(&refused).contains("retries is 11, at most 10"),
        "{}",
        stderr(&refused)
    );

    // Five retries of 8 s each would take 48 s.
    std::fs::write(dir.path().join("run.toml"), with("5")).unwrap();
    let mut train = spawn_train(dir.path(), false);
    let deadline = Instant::now() + Duration::from_secs(120);
    // Once a worker answers (or hangs on) a call: it is the train process's child.
    let worker_started = || {
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", train.id()))
            .unwrap_or_default()
            .split_whitespace()
            .any(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("reward-worker"))
            })
    };
    while !worker_started() {
        assert!(Instant::now() < deadline, "no worker started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Past its start-up, into the call that hangs.
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(train.id() as i32, libc::SIGTERM) };
    let signalled = Instant::now();
    while train.try_wait().unwrap().is_none() {
        assert!(
            signalled.elapsed() < Duration::from_secs(30),
            "SIGTERM was not heeded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = train.wait_with_output().unwrap();
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("1 attempt(s) failed: no answer within 8 s")
            && text.contains("not retried: a stop was asked for"),
        "{text}"
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    // save_steps = 0: the first signal's message does not promise a checkpoint.
    let dir = setup("max_steps = 400\nsave_steps = 0", "");
    // Steps of a second or more, so both signals land within one.
    let config = std::fs::read_to_string(dir.path().join("run.toml")).unwrap();
    let slow = config
        .replace("num_generations = 2", "num_generations = 8")
        .replace("prompts_per_step = 2", "prompts_per_step = 8")
        .replace(
            "max_completion_length = 8",
            "max_completion_length = 256\nmin_completion_length = 256",
        );
    std::fs::write(dir.path().join("run.toml"), slow).unwrap();
    let run_dir = dir.path().join("run");
    let child = spawn_train(dir.path(), false);
    let started = Instant::now();
    while std::fs::read_to_string(run_dir.join("metrics.jsonl")).map_or(true, |m| m.is_empty()) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no step was recorded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Into the second step (a step takes seconds here), so neither signal lands between steps.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..2 {
        // SAFETY: signalling our own child. Apart, or the kernel merges them into one.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(128 + libc::SIGINT), "{text}");
    assert!(
        !text.contains("stopped by"),
        "the step was not waited for: {text}"
    );
    // Each said as it arrives (a step waiting on a hung in-process objective said nothing).
    assert!(
        text.contains("SIGINT received: the run stops after the step in progress (run.save_steps = 0: no checkpoint is written")
            && text.contains("SIGINT received again: stopping at once"),
        "{text}"
    );
}

#[test]
fn plugins_verify_prints_pins_without_opening_a_library() {
    let plugins = support::plugin_dir(&["not_a_crpo_plugin", "contraindication_safety"]);
    let marks = tempfile::tempdir().unwrap();
    let mark = marks.path().join("constructor-ran");
    let output = crpo()
        .args([
            "--plugins",
            plugins.path().to_str().unwrap(),
            "plugins",
            "--verify",
        ])
        .env("CRPO_TEST_CONSTRUCTOR_MARK", &mark)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for library in ["libnot_a_crpo_plugin.so", "libcontraindication_safety.so"] {
        let sha256 = crpo_host::plugins::trust::sha256_of(&plugins.path().join(library)).unwrap();
        let pin = format!("[[run.plugin_pins]]\nfile = \"{library}\"\nsha256 = \"{sha256}\"");
        assert!(stdout.contains(&pin), "{stdout}");
    }
    assert!(!mark.exists(), "--verify opened a library");
}

#[test]
fn mask_truncated_completions_leaves_cut_completions_out_of_the_loss() {
    use crpo_host::train::config::AlgorithmConfig;
    use crpo_host::train::optimizer::AdamW;
    use crpo_host::train::update::{update_policy, Batch, Reference};
    let dir = setup("", "");
    let policy = tiny_policy(&dir.path().join("model"));
    let settings = adam_settings();
    let prompts = vec![vec![5i64, 6, 7], vec![5, 6, 7]];
    let completions = vec![vec![8i64, 9], vec![10, 11, 12]];
    let grad_norm = |mask: bool, truncated: [bool; 2]| {
        let algorithm = AlgorithmConfig {
            mini_batch_size: 2,
            gradient_accumulation_steps: 1,
            mask_truncated_completions: mask,
            learning_rate: 1e-9,
            ..AlgorithmConfig::default()
        };
        let mut optimizer = AdamW::new(policy.parameters(), settings);
        let batch = Batch {
            prompts: &prompts,
            completions: &completions,
            advantages: &[-1.0, 1.0],
            truncated: &truncated,
        };
        update_policy(
            &policy,
            Reference::None,
            &mut optimizer,
            &batch,
            &algorithm,
            1,
            10,
            None,
        )
        .unwrap()
        .grad_norm
    };
    let all = grad_norm(false, [true, true]);
    assert!(all > 0.0);
    assert_eq!(
        grad_norm(true, [true, true]),
        0.0,
        "both cut: nothing to learn from"
    );
    let one = grad_norm(true, [true, false]);
    assert!(
        one > 0.0 && (one - all).abs() > 1e-2 * all,
        "one cut row leaves the other's gradient: {one} vs {all}"
    );
    // (Each call's tiny update, lr 1e-9, moves the weights a hair: equal up to that.)
    let none = grad_norm(true, [false, false]);
    assert!(
        (none - all).abs() < 1e-4 * all,
        "nothing cut: as without the mask ({none} vs {all})"
    );
}

/// A step whose completions were all cut and masked trained nothing: it says so, rather than
/// logging a loss, KL and entropy of 0 as if they were measured.
#[test]
fn a_step_with_every_completion_masked_says_nothing_was_trained() {
    let dir = setup("max_steps = 1", "mask_truncated_completions = true");
    edit_config(
        dir.path(),
        "max_completion_length = 8",
        "max_completion_length = 1",
    );
    let output = run(dir.path(), &["train", "--config", "run.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let says = stderr(&output);
    assert!(says.contains("step 1: every completion was cut"), "{says}");
    assert!(says.contains("nothing was trained"), "{says}");
}

/// When dynamic sampling drops every group, the step's record still describes what was
/// sampled (the tied groups) and the schedule's learning rate, not zeros.
#[test]
fn a_step_whose_groups_were_all_dropped_records_what_was_sampled() {
    let dir = setup(
        "max_steps = 1",
        "dynamic_sampling = true\nmax_resample_rounds = 1\nlearning_rate = 1e-3",
    );
    edit_config(dir.path(), "preset = \"crpo\"", "preset = \"grpo\"");
    let output = run(dir.path(), &["train", "--config", "run.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(record["optimizer_updates"], 0, "{record}");
    assert!(
        record["dynamic_sampling"]["groups_dropped"].as_u64().unwrap() > 0,
        "{record}"
    );
    assert_eq!(record["frac_reward_zero_std"], 1.0, "{record}");
    assert!(record["learning_rate"].as_f64().unwrap() > 0.0, "{record}");
    assert!(
        record["completion_length"]["mean"].as_f64().unwrap() >= 1.0,
        "{record}"
    );
    assert!(record["rollout_tokens_per_s"].as_f64().unwrap() > 0.0, "{record}");
    let consistency = record["objectives"]["consistency"]["mean"].as_f64().unwrap();
    assert!(consistency > 0.0, "the tied groups' scores, not zeros: {record}");
    let samples = std::fs::read_to_string(dir.path().join("run/samples.jsonl")).unwrap();
    assert!(samples.lines().count() > 0, "the dropped groups are sampled");
}

/// A run directory that is the model's: refused before anything is written there.
#[test]
fn a_run_into_the_model_directory_is_refused() {
    let dir = setup("max_steps = 1", "");
    edit_config(dir.path(), "output_dir = \"run\"", "output_dir = \"model\"");
    let before: Vec<_> = std::fs::read_dir(dir.path().join("model")).unwrap().collect();
    let output = run(dir.path(), &["train", "--config", "run.toml"]);
    let says = stderr(&output);
    assert!(
        !output.status.success() && says.contains("is the model directory model.path"),
        "{says}"
    );
    let after: Vec<_> = std::fs::read_dir(dir.path().join("model")).unwrap().collect();
    assert_eq!(before.len(), after.len(), "nothing written into the model");
}

/// A model's chat template that is empty or does not parse is named with its file.
#[test]
fn a_broken_chat_template_is_named_with_its_file() {
    let dir = setup("", "");
    let config_path = dir.path().join("model/tokenizer_config.json");
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let _ = std::fs::remove_file(dir.path().join("model/chat_template.jinja"));
    for (template, says) in [
        ("", "the chat template is empty"),
        ("{% for m in messages %}{{ m.content }", "syntax error"),
    ] {
        let mut config = original.clone();
        config["chat_template"] = template.into();
        std::fs::write(&config_path, config.to_string()).unwrap();
        let output = run(
            dir.path(),
            &[
                "generate",
                "--model",
                "model",
                "--chat",
                "--prompt",
                "hi",
                "--max-new-tokens",
                "2",
            ],
        );
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(
            text.contains("tokenizer_config.json") && text.contains(says),
            "{text}"
        );
    }
}

/// A plugin's refusal of its options (or an unknown plugin) names where the config gives the
/// objective, and a misspelt plugin name gets the close one.
#[test]
fn an_objective_a_plugin_refuses_is_named_by_file_and_line() {
    let dir = setup("max_steps = 1", "");
    edit_config(
        dir.path(),
        "preset = \"crpo\"",
        "preset = \"crpo\"\n\n[[reward.objectives]]\nplugin = \"length_penalty\"\noptions = { bogus = 1 }",
    );
    let text = std::fs::read_to_string(dir.path().join("run.toml")).unwrap();
    let line = text.lines().position(|l| l == "[[reward.objectives]]").unwrap() + 1;
    let said = stderr(&run(dir.path(), &["train", "--config", "run.toml"]));
    assert!(
        said.contains(&format!(
            "run.toml:{line}: [[reward.objectives]] with plugin = \"length_penalty\""
        )) && said.contains("bogus"),
        "{said}"
    );
    edit_config(
        dir.path(),
        "plugin = \"length_penalty\"\noptions = { bogus = 1 }",
        "plugin = \"lenght_penalty\"",
    );
    let said = stderr(&run(dir.path(), &["train", "--config", "run.toml"]));
    assert!(
        said.contains(&format!("run.toml:{line}:")) && said.contains("(did you mean `length_penalty`?)"),
        "{said}"
    );
}
