//! `crpo-host report` on two short real runs: one curve per objective with a point per step
//! for each run, and the page opens in headless Chromium with its script run and no error
//! (the set-up installs Debian's chromium with CRPO_WITH_CHROMIUM=1, as `.ci/run` does).

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn crpo(dir: &Path, args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Run "a" has a KL penalty (beta 0.01), so a reference and a logged `kl`; the others none.
fn train(dir: &Path, name: &str, seed: u64) {
    let beta = if name == "a" { 0.01 } else { 0.0 };
    let data = support::workspace_root().join("data/demo/train.jsonl");
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[run]\noutput_dir = \"{name}\"\nseed = {seed}\nmax_steps = 4\nsave_steps = 4\nsample_steps = 2\neval_steps = 2\neval_decodings = [\"greedy\", \"sampled\"]\n[eval]\nlimit = 4\nmax_completion_length = 8\ntemperature = 1.0\nnum_generations_eval = 2\n[model]\npath = \"model\"\n[data]\npath = \"{}\"\n[reward]\npreset = \"crpo\"\n[algorithm]\nnum_generations = 4\nprompts_per_step = 2\nper_device_train_batch_size = 8\ngradient_accumulation_steps = 1\nmax_completion_length = 8\nbeta = {beta}\nlearning_rate = 1e-3\n",
            data.display()
        ),
    )
    .unwrap();
    crpo(dir, &["train", "--config", config.to_str().unwrap()]);
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.exists())
            })
        })
}

#[test]
fn the_report_draws_every_step_of_every_run_and_opens_clean_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(&dir.path().join("model"), 0).unwrap();
    train(dir.path(), "a", 0);
    train(dir.path(), "b", 1);
    crpo(
        dir.path(),
        &["report", "a", "--compare", "b", "--out", "report.html"],
    );
    // A run's file, or a run that is not there, is named as such.
    for (run, says) in [("a/metrics.jsonl", "is a file"), ("c", "does not exist")] {
        let output = Command::new(env!("CARGO_BIN_EXE_crpo-host"))
            .args(["report", run])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(says), "{stderr}");
    }
    // `--out -` is standard output: the page alone, no file named `-`.
    let output = Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .args(["report", "a", "--out", "-"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && page.starts_with("<!doctype html>") && page.ends_with("</html>"));
    assert!(!dir.path().join("-").exists());
    // kl is measured only with a KL penalty (no reference runs without one), as TRL logs it.
    for (run, measured) in [("a", true), ("b", false)] {
        let metrics = std::fs::read_to_string(dir.path().join(run).join("metrics.jsonl")).unwrap();
        for line in metrics.lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(record.get("kl").is_some(), measured, "run {run}: {record}");
        }
    }
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    for objective in ["accuracy", "clinical_reasoning", "consistency"] {
        for run in ["a", "b"] {
            let path = format!("data-series=\"objective/{objective}\" data-run=\"{run}\" data-points=\"4\"");
            assert!(html.contains(&path), "{path} missing");
        }
    }
    for series in [
        "reward",
        "kl",
        "entropy",
        "completion_length/mean",
        "learning_rate",
        "grad_norm",
    ] {
        assert!(
            html.contains(&format!("data-series=\"{series}\"")),
            "{series} missing"
        );
    }
    assert_eq!(
        html.matches("<tr data-step=").count(),
        2 * 2 * 4,
        "2 runs × 2 samplings × 4 completions"
    );
    // Evaluation during training (eval_steps = 2): in metrics.jsonl at steps 2 and 4, charted.
    let metrics = std::fs::read_to_string(dir.path().join("a/metrics.jsonl")).unwrap();
    let evaluated: Vec<u64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| {
            ["greedy", "sampled"]
                .iter()
                .all(|d| r["eval"][d]["accuracy"].is_number() && r["eval"][d]["questions"] == 4)
        })
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(evaluated, [2, 4]);
    for decoding in ["greedy", "sampled"] {
        // The share answered right and the accuracy objective's mean are two series.
        for series in ["accuracy", "objectives/accuracy"] {
            let path = format!("data-series=\"eval/{decoding}/{series}\" data-run=\"a\" data-points=\"2\"");
            assert_eq!(html.matches(&path).count(), 1, "{path}");
        }
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing fetched"
    );
    assert!(
        html.contains("a — environment") && html.contains("&quot;torch&quot;: &quot;2."),
        "the environment"
    );

    // Runs whose folders share a name are told apart by their paths.
    for copy in ["x/a", "y/a"] {
        std::fs::create_dir_all(dir.path().join(copy)).unwrap();
        std::fs::copy(
            dir.path().join("a/metrics.jsonl"),
            dir.path().join(copy).join("metrics.jsonl"),
        )
        .unwrap();
    }
    crpo(
        dir.path(),
        &["report", "x/a", "--compare", "y/a", "--out", "same-names.html"],
    );
    let same_names = std::fs::read_to_string(dir.path().join("same-names.html")).unwrap();
    for run in ["x/a", "y/a"] {
        let path = format!("data-series=\"objective/accuracy\" data-run=\"{run}\" data-points=\"4\"");
        assert!(same_names.contains(&path), "{path} missing");
    }
    assert!(same_names.contains("<title>crpo report: x/a vs y/a</title>"));

    let Some(browser) = chromium() else {
        println!("skipped the browser check: no chromium (CRPO_WITH_CHROMIUM=1 scripts/setup.sh)");
        return;
    };
    let page = format!("file://{}", dir.path().join("report.html").display());
    let headless = |extra: &[&str]| {
        let output = Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .args(extra)
            .arg(&page)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (dom, log) = headless(&["--dump-dom"]);
    assert!(
        dom.contains("data-ready=\"1\""),
        "the report's script did not finish: {log}"
    );
    // The attribute, not the script's own text that sets it.
    assert!(
        !dom.contains("data-errors=\""),
        "script errors on the page: {log}"
    );
    assert!(!log.contains("Uncaught"), "{log}");
    let screenshot = dir.path().join("report.png");
    headless(&[
        "--window-size=1400,2400",
        &format!("--screenshot={}", screenshot.display()),
    ]);
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 20_000, "a screenshot of the charts ({size} bytes)");
    if let Some(keep) = std::env::var_os("CRPO_KEEP_SCREENSHOT") {
        std::fs::copy(&screenshot, keep).unwrap();
    }
}

#[test]
fn a_runs_samples_score_again_with_crpo_host_score() {
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(&dir.path().join("model"), 0).unwrap();
    train(dir.path(), "a", 0);
    crpo(
        dir.path(),
        &[
            "score",
            "--objectives",
            "accuracy,consistency",
            "--input",
            "a/samples.jsonl",
            "--output",
            "rescored.jsonl",
        ],
    );
    let read = |path: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.path().join(path))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (samples, rescored) = (read("a/samples.jsonl"), read("rescored.jsonl"));
    assert_eq!(samples.len(), rescored.len());
    assert_eq!(samples.len(), 8, "2 samplings × 4 completions");
    for (sample, again) in samples.iter().zip(&rescored) {
        for objective in ["accuracy", "consistency"] {
            assert_eq!(
                sample["scores"][objective].as_f64().unwrap(),
                again["scores"][objective]["score"].as_f64().unwrap(),
                "{objective}: {sample}"
            );
        }
    }
}
