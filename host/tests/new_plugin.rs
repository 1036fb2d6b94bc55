//! `crpo-host new reward|dataset NAME`: the crate it writes tests, builds and loads as written.

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn crpo_host(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .args(args)
        .current_dir(dir)
        .env_remove("CRPO_PLUGIN_PATH")
        .output()
        .expect("crpo-host runs")
}

/// `cargo <command>` in the crate, into the plugin tests' target directory (shared, so the sdk
/// and its dependencies are built once).
fn cargo(krate: &Path, command: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([command, "--quiet", "--manifest-path"])
        .arg(krate.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(support::workspace_root().join("target/plugin-tests"))
        .status()
        .unwrap();
    assert!(status.success(), "cargo {command} in {}", krate.display());
}

fn library(name: &str) -> std::path::PathBuf {
    support::workspace_root()
        .join("target/plugin-tests/debug")
        .join(format!("lib{name}.{}", std::env::consts::DLL_EXTENSION))
}

#[test]
fn a_new_reward_crate_tests_builds_loads_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let made = crpo_host(d, &["new", "reward", "gold-naming"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let krate = d.join("gold-naming");
    cargo(&krate, "test");
    cargo(&krate, "build");
    let plugins = d.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(library("gold_naming"), plugins.join("libgold_naming.so")).unwrap();
    let listed = crpo_host(d, &["--plugins", "plugins", "plugins"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    let line = listed
        .lines()
        .find(|l| l.contains("gold_naming"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        line.starts_with("reward") && line.contains(crpo_sdk::SDK_VERSION),
        "{line}"
    );
    let input = r#"{"question": "Which drug reverses heparin?", "options": {"A": "Vitamin K", "B": "Protamine sulfate"}, "answer_idx": "B", "completion": "<think>Protamine sulfate binds it.</think>\\boxed{B}"}"#;
    std::fs::write(d.join("in.jsonl"), format!("{input}\n")).unwrap();
    let scored = crpo_host(
        d,
        &[
            "--plugins",
            "plugins",
            "score",
            "--objectives",
            "gold_naming",
            "--input",
            "in.jsonl",
        ],
    );
    assert!(
        scored.status.success(),
        "{}",
        String::from_utf8_lossy(&scored.stderr)
    );
    let row: serde_json::Value = serde_json::from_slice(&scored.stdout).unwrap();
    assert_eq!(row["scores"]["gold_naming"]["score"], 1.5, "{row}");

    // Nothing is overwritten, and a name that cannot be a crate is refused.
    let again = crpo_host(d, &["new", "reward", "gold-naming"]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = crpo_host(d, &["new", "dataset", "9 lives"]);
    assert!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("not a usable crate name")
    );
    for taken in ["self", "std", "crpo-sdk", "serde"] {
        let bad = crpo_host(d, &["new", "reward", taken]);
        assert!(
            !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("already uses"),
            "{taken}"
        );
        assert!(!d.join(taken).exists());
    }
    // A built-in's name would clash with the built-in at load time.
    for (kind, builtin) in [("reward", "accuracy"), ("dataset", "medqa")] {
        let clash = crpo_host(d, &["new", kind, builtin]);
        assert!(
            !clash.status.success() && String::from_utf8_lossy(&clash.stderr).contains("crpo's built-in"),
            "{kind} {builtin}: {}",
            String::from_utf8_lossy(&clash.stderr)
        );
        assert!(!d.join(builtin).exists());
    }
    // So would a name the plugin directories already hold.
    let clash = crpo_host(
        d,
        &[
            "--plugins",
            "plugins",
            "new",
            "reward",
            "gold_naming",
            "--dir",
            "again",
        ],
    );
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(
        !clash.status.success() && err.contains("libgold_naming.so"),
        "{err}"
    );
    assert!(!d.join("again").exists());
}

#[test]
fn a_new_dataset_crate_tests_builds_and_reads_with_data_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let made = crpo_host(d, &["new", "dataset", "ward-questions", "--dir", "wq"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    cargo(&d.join("wq"), "test");
    cargo(&d.join("wq"), "build");
    let plugins = d.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(library("ward_questions"), plugins.join("libward_questions.so")).unwrap();
    std::fs::write(
        d.join("q.jsonl"),
        "{\"question\": \"Dose in mg?\", \"answer\": \"140\"}\n{\"question\": \"Which?\", \"options\": {\"A\": \"x\"}, \"answer\": \"A\"}\n",
    )
    .unwrap();
    let checked = crpo_host(
        d,
        &[
            "--plugins",
            "plugins",
            "data",
            "check",
            "--dataset",
            "ward_questions",
            "--path",
            "q.jsonl",
            "--json",
        ],
    );
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(report[0]["examples"], 2, "{report}");
}
