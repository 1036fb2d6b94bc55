//! What a run prints: colour only for a person at a terminal (never in a redirected log, never
//! under NO_COLOR), a start-up line first, a summary line every `logging_steps`, and the
//! binary's own name in usage messages.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;

/// A colour or style escape (SGR): `ESC [ … m`.
fn has_colour(text: &str) -> bool {
    text.split('\u{1b}').skip(1).any(|rest| {
        rest.strip_prefix('[')
            .and_then(|r| {
                r.find('m')
                    .map(|end| r[..end].chars().all(|c| c.is_ascii_digit() || c == ';'))
            })
            .unwrap_or(false)
    })
}

fn setup(dir: &Path) {
    crpo_plugins_policy::presets::write_tiny(&dir.join("model"), 0).unwrap();
    let data = support::workspace_root().join("data/demo/train.jsonl");
    std::fs::write(
        dir.join("run.toml"),
        format!(
            "[run]\noutput_dir = \"run\"\nmax_steps = 5\nlogging_steps = 2\nsave_steps = 0\n[model]\npath = \"model\"\n[data]\npath = \"{}\"\n[reward]\npreset = \"crpo\"\n[algorithm]\nnum_generations = 2\nprompts_per_step = 2\nper_device_train_batch_size = 4\ngradient_accumulation_steps = 1\nmax_completion_length = 8\nbeta = 0.0\n",
            data.display()
        ),
    )
    .unwrap();
}

#[test]
fn a_redirected_log_has_no_colour_and_says_what_runs_first() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .args(["train", "--config", "run.toml"])
        .current_dir(dir.path())
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !has_colour(&stderr),
        "escape codes in a redirected log: {stderr:?}"
    );
    // What runs, at once (before anything loads), then the memory plan, then the steps.
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(" INFO ")).collect();
    assert!(
        lines[0].contains("train: ")
            && lines[0].contains("policy `qwen2`")
            && lines[0].contains("on cpu in f32")
            && lines[0].contains("accuracy"),
        "{stderr}"
    );
    assert!(lines[1].contains("memory plan on cpu"), "{stderr}");
    let steps: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split("step ").nth(1))
        .filter_map(|rest| rest.split(':').next())
        .collect();
    assert_eq!(
        steps,
        ["1", "2", "4", "5"],
        "every 2nd step, and the first and last: {stderr}"
    );
    // A run shorter than sample_steps (10) still writes the completions it ends with.
    let samples = std::fs::read_to_string(dir.path().join("run/samples.jsonl")).unwrap();
    let sampled: Vec<serde_json::Value> = samples
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        !sampled.is_empty() && sampled.iter().all(|s| s["step"] == 5),
        "{samples}"
    );
    // Each with its length in tokens (the budget is 8) and whether it was cut there.
    for sample in &sampled {
        let tokens = sample["completion_tokens"].as_u64().unwrap();
        assert!((1..=8).contains(&tokens), "{sample}");
        assert_eq!(
            sample["truncated"].as_bool(),
            Some(tokens == 8 && sample["truncated"] == true),
            "{sample}"
        );
    }
}

#[test]
fn at_a_terminal_colour_follows_no_color() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    // script(1) gives the run a pseudo-terminal.
    let run = |no_color: bool| {
        let mut command = Command::new("script");
        command
            .args([
                "-qec",
                &format!(
                    "{} train --config run.toml --output-dir run-{no_color}",
                    env!("CARGO_BIN_EXE_crpo-host")
                ),
                "/dev/null",
            ])
            .current_dir(dir.path())
            .env_remove("NO_COLOR");
        if no_color {
            command.env("NO_COLOR", "1");
        }
        let output = command.output().expect("script(1) runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    assert!(has_colour(&run(false)), "a terminal gets colour");
    assert!(!has_colour(&run(true)), "NO_COLOR=1 gets none");
}

#[test]
fn usage_names_crpo_host() {
    let output = Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("Usage: crpo-host ") && !help.contains("crpo-host-runtime"),
        "{help}"
    );
}
