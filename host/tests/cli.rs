//! The `crpo-host` binary as a user runs it.

mod support;

use serde_json::Value;
use std::process::{Command, Output};
use support::plugin_dir;

fn crpo_host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("CRPO_PLUGIN_PATH")
        .output()
        .expect("crpo-host runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn doctor_reports_torch_without_ld_library_path() {
    let output = crpo_host(&["doctor"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("torch            2.11.0"), "{text}");
    assert!(
        text.contains("CUDA available") && text.contains("cuDNN available"),
        "{text}"
    );
    assert!(
        text.contains(&format!("crpo-sdk (ABI)   {}", crpo_sdk::SDK_VERSION)),
        "{text}"
    );
}

#[test]
fn doctor_loads_the_plugin_directories_as_a_run_would() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.so"), b"not a library").unwrap();
    let output = crpo_host(&["--plugins", dir.path().to_str().unwrap(), "doctor"]);
    assert!(!output.status.success(), "{}", stdout(&output));
    assert!(stderr(&output).contains("junk.so"), "{}", stderr(&output));
    // The rest of the report still printed before the failure.
    assert!(stdout(&output).contains("torch            2.11.0"));
    // A config's plugin_dirs too, as `train --config` loads them (doctor said "(none)").
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "[run]\nplugin_dirs = [\"{}\"]\n[model]\npath = \"m\"\n[data]\npath = \"d.jsonl\"\n[reward]\npreset = \"crpo\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let output = crpo_host(&["doctor", "--config", config.to_str().unwrap()]);
    assert!(!output.status.success(), "{}", stdout(&output));
    assert!(stderr(&output).contains("junk.so"), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(&dir.path().display().to_string()),
        "{}",
        stdout(&output)
    );

    // A stale CRPO_PLUGIN_PATH is named as the place the directory came from.
    let plugins_failing_with_path = |path: &std::path::Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_crpo-host"))
            .arg("plugins")
            .env("CRPO_PLUGIN_PATH", path)
            .output()
            .unwrap();
        assert!(!output.status.success());
        stderr(&output)
    };
    let err = plugins_failing_with_path(&dir.path().join("gone"));
    assert!(err.contains("CRPO_PLUGIN_PATH") && err.contains("gone"), "{err}");

    // So is one anyone can write to (holding a library: an empty one loads nothing).
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::write(open.join("libreward.so"), b"").unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let err = plugins_failing_with_path(&open);
    assert!(
        err.contains("CRPO_PLUGIN_PATH (colon-separated) is unsafe")
            && err.contains("writable by every user"),
        "{err}"
    );
}

#[test]
fn plugins_lists_builtins_and_loaded_libraries_with_origin() {
    let dir = plugin_dir(&["contraindication_safety", "csv_dataset", "legacy_plugin"]);
    let output = crpo_host(&["--plugins", dir.path().to_str().unwrap(), "plugins"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .to_string()
    };
    assert!(line(" accuracy ").starts_with("reward   cheap") && line(" accuracy ").contains("builtin"));
    assert!(line("medqa").starts_with("dataset"));
    let safety = line("contraindication_safety");
    assert!(
        safety.starts_with("reward")
            && safety.contains("0.1.0")
            && safety.contains("libcontraindication_safety.so")
    );
    assert!(line("csv_mcq").starts_with("dataset"));
    // The SDK column: the crpo-sdk each library was built against.
    let sdk_of = |name: &str| line(name).split_whitespace().nth(4).unwrap().to_string();
    assert_eq!(sdk_of("contraindication_safety"), crpo_sdk::SDK_VERSION);
    assert_eq!(sdk_of(" non_empty "), "1.0.0");
    assert_eq!(sdk_of(" accuracy "), crpo_sdk::SDK_VERSION);

    // A library that does not load: the others are still listed, then it is named, exit 1
    // (it stopped the whole listing, the one command meant for finding it).
    std::fs::write(dir.path().join("libbroken.so"), b"not a library").unwrap();
    let output = crpo_host(&["--plugins", dir.path().to_str().unwrap(), "plugins"]);
    assert!(!output.status.success());
    assert!(stdout(&output).contains("contraindication_safety"));
    let err = stderr(&output);
    assert!(
        err.contains("1 plugin library(ies)") && err.contains("libbroken.so"),
        "{err}"
    );
    // The listing keeps the default trust: a library others can write to is refused, not
    // opened (so none of its code runs), and the others are still listed.
    std::fs::remove_file(dir.path().join("libbroken.so")).unwrap();
    let safety = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("contraindication_safety"))
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&safety, std::fs::Permissions::from_mode(0o666)).unwrap();
    let output = crpo_host(&["--plugins", dir.path().to_str().unwrap(), "plugins"]);
    let (listed, err) = (stdout(&output), stderr(&output));
    assert!(
        !output.status.success() && err.contains("contraindication_safety"),
        "{err}"
    );
    assert!(
        !listed.contains("contraindication_safety") && listed.contains("csv_mcq"),
        "{listed}"
    );
}

#[test]
fn score_writes_each_objectives_score_per_line() {
    let dir = plugin_dir(&["contraindication_safety"]);
    let input = dir.path().join("completions.jsonl");
    let record = |completion: &str| {
        serde_json::json!({
            "question": "A 70-year-old man takes warfarin. Best analgesic?",
            "answer": "Acetaminophen", "answer_idx": "B",
            "options": {"A": "Ibuprofen", "B": "Acetaminophen", "C": "Naproxen", "D": "Ketorolac"},
            "meta_info": "step2",
            "completion": completion,
        })
        .to_string()
    };
    let lines = [
        record("<think>NSAIDs bleed with warfarin.</think><answer>So \\boxed{B}</answer>"),
        record("<think>pain</think><answer>\\boxed{A}</answer>"),
    ];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let output = crpo_host(&[
        "--plugins",
        dir.path().to_str().unwrap(),
        "score",
        "--objectives",
        "accuracy,format_code,contraindication_safety",
        "--options",
        r#"{"contraindication_safety": {"penalty": 2.0}}"#,
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let rows: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    let score = |row: &Value, name: &str| row["scores"][name]["score"].as_f64().unwrap();
    assert_eq!(
        [
            score(&rows[0], "accuracy"),
            score(&rows[0], "format_code"),
            score(&rows[0], "contraindication_safety")
        ],
        [1.0, 1.5, 0.0]
    );
    assert_eq!(
        [
            score(&rows[1], "accuracy"),
            score(&rows[1], "format_code"),
            score(&rows[1], "contraindication_safety")
        ],
        [0.0, 1.0, -2.0]
    );
    assert_eq!(
        rows[1]["scores"]["contraindication_safety"]["diagnostics"]["interaction_conflicts"],
        1.0
    );

    // --output: a new file, then the same again (an earlier output is replaced); a file the
    // user saved is kept; a run's samples are not an earlier output.
    let score_to = |output: &std::path::Path| {
        crpo_host(&[
            "score",
            "--objectives",
            "accuracy",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
    };
    let scored = dir.path().join("scored.jsonl");
    for _ in 0..2 {
        let output = score_to(&scored);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(std::fs::read_to_string(&scored).unwrap().lines().count(), 2);
    }
    let notes = dir.path().join("notes.txt");
    let samples = dir.path().join("samples.jsonl");
    std::fs::write(&notes, "my notes\n").unwrap();
    std::fs::write(
        &samples,
        r#"{"step": 1, "example": {}, "completion": "x", "scores": {}, "line": 1}"#,
    )
    .unwrap();
    for kept in [&notes, &samples] {
        let before = std::fs::read_to_string(kept).unwrap();
        let output = score_to(kept);
        assert!(!output.status.success());
        assert!(
            stderr(&output).contains("not an earlier score output"),
            "{}",
            stderr(&output)
        );
        assert_eq!(std::fs::read_to_string(kept).unwrap(), before);
    }
}

#[test]
fn score_names_the_file_line_and_field_of_a_bad_record() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    // A byte-order mark before line 1 (a Windows editor's) is not part of its record.
    std::fs::write(&input, "\u{feff}{\"question\": \"q\", \"options\": {\"A\": \"x\"}, \"answer_idx\": \"A\", \"completion\": \"\\\\boxed{A}\"}\n{\"question\": \"q\"}\n").unwrap();
    let output = crpo_host(&[
        "score",
        "--objectives",
        "accuracy",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("bad.jsonl:2: field `completion`"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // An empty input scores nothing, and a mistyped reader is named whatever the records.
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let score = |input: &std::path::Path, dataset: &str| {
        let input = input.to_str().unwrap();
        stderr(&crpo_host(&[
            "score",
            "--objectives",
            "accuracy",
            "--dataset",
            dataset,
            "--input",
            input,
        ]))
    };
    assert!(score(&empty, "medqa").contains("holds no records to score"));
    assert!(score(&input, "medqaa").contains("--dataset"));

    let output = crpo_host(&[
        "score",
        "--objectives",
        "accuracy",
        "--options",
        r#"{"acuracy": {}}"#,
        "--input",
        input.to_str().unwrap(),
    ]);
    let err = stderr(&output);
    assert!(
        !output.status.success() && err.contains("`acuracy`, which is not among --objectives"),
        "{err}"
    );

    let output = crpo_host(&[
        "score",
        "--objectives",
        "accuracy,accuracy",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(!output.status.success() && stderr(&output).contains("`accuracy` twice"));

    // A reader's options reach it: MedMCQA answers 1-3 alone do not say their base.
    let medmcqa = dir.path().join("medmcqa.jsonl");
    let record = |cop: u8| {
        format!(
            "{{\"question\": \"Drug?\", \"opa\": \"a\", \"opb\": \"b\", \"opc\": \"c\", \"opd\": \"d\", \"cop\": {cop}, \"completion\": \"\\\\boxed{{B}}\"}}\n"
        )
    };
    std::fs::write(&medmcqa, record(2) + &record(1)).unwrap();
    let score_medmcqa = |extra: &[&str]| {
        let base = [
            "score",
            "--objectives",
            "accuracy",
            "--dataset",
            "medmcqa",
            "--input",
        ];
        crpo_host(&[&base[..], &[medmcqa.to_str().unwrap()], extra].concat())
    };
    assert!(stderr(&score_medmcqa(&[])).contains("cop_base"));
    let output = score_medmcqa(&["--dataset-options", r#"{"cop_base": 1}"#]);
    assert!(output.status.success(), "{}", stderr(&output));
    let first: Value = serde_json::from_str(stdout(&output).lines().next().unwrap()).unwrap();
    assert_eq!(first["scores"]["accuracy"]["score"], 1.0, "cop 2 of 1-based is B");

    let output = crpo_host(&[
        "score",
        "--objectives",
        "no_such_objective",
        "--input",
        input.to_str().unwrap(),
    ]);
    let err = stderr(&output);
    assert!(
        !output.status.success()
            && err.contains("no reward plugin named `no_such_objective`")
            && err.contains("accuracy"),
        "{err}"
    );
}

#[test]
fn init_model_then_generate_with_the_chat_template() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    let output = crpo_host(&[
        "init-model",
        "--preset",
        "tiny",
        "--out",
        model.to_str().unwrap(),
        "--seed",
        "4",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(model.join(file).exists(), "{file} missing");
    }
    let generate = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "Which test?",
            "--max-new-tokens",
            "8",
        ];
        args.extend_from_slice(extra);
        let output = crpo_host(&args);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    assert_eq!(
        generate(&["--chat", "--greedy"]),
        generate(&["--chat", "--greedy"])
    );
    assert_eq!(generate(&["--seed", "9"]), generate(&["--seed", "9"]));
    // Greedy with a sampling flag is a contradiction, not a silent choice of one.
    let output = crpo_host(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "x",
        "--greedy",
        "--temperature",
        "0.7",
    ]);
    let err = stderr(&output);
    assert!(
        !output.status.success() && err.contains("'--greedy' cannot be used with '--temperature"),
        "{err}"
    );

    let output = crpo_host(&[
        "generate",
        "--model",
        dir.path().to_str().unwrap(),
        "--prompt",
        "x",
    ]);
    let err = stderr(&output);
    assert!(!output.status.success() && err.contains("config.json"), "{err}");
    let output = crpo_host(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "x",
        "--device",
        "tpu",
    ]);
    assert!(stderr(&output).contains("device `tpu`"));
}

#[test]
fn a_missing_libtorch_is_a_clear_error_not_a_loader_failure() {
    let missing = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .arg("doctor")
        .env("CRPO_LIBTORCH_DIR", missing.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("cannot load libtorch from")
            && text.contains("libtorch_cpu.so")
            && text.contains("scripts/setup.sh"),
        "{text}"
    );
    // A file that is not a library is reported with the loader's reason.
    std::fs::write(missing.path().join("libtorch_cpu.so"), b"not an ELF file").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .arg("doctor")
        .env("CRPO_LIBTORCH_DIR", missing.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("libtorch_cpu.so"), "{}", stderr(&output));
}

/// `crpo-host` copied without `crpo-host-runtime` (to carry it to another machine) says to
/// copy both.
#[test]
fn the_launcher_copied_alone_says_to_copy_the_runtime_too() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("crpo-host");
    std::fs::copy(env!("CARGO_BIN_EXE_crpo-host"), &alone).unwrap();
    let output = Command::new(&alone).arg("doctor").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("copy both binaries"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_launcher_passes_arguments_and_exit_status_through() {
    let output = crpo_host(&["no-such-command"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "clap's usage error, from the runtime"
    );
    assert!(
        stderr(&output).contains("unrecognized subcommand"),
        "{}",
        stderr(&output)
    );
}

/// The demo into `out`, shortened to seconds: two steps per arm, eight held-out questions.
fn short_demo(out: &str) -> [&str; 11] {
    [
        "demo",
        "--out",
        out,
        "--steps",
        "2",
        "--sft-epochs",
        "1",
        "--eval-questions",
        "8",
        "--eval-samples",
        "2",
    ]
}

#[test]
fn demo_runs_the_matched_arms_and_prints_every_table() {
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("demo");
    let args = short_demo(out_dir.to_str().unwrap());
    let output = crpo_host(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for expected in [
        "| cold start (SFT) | greedy",
        "| GRPO             | T=1, k=2 (vote)",
        "| CRPO             | greedy",
        "acc (share right)",
        "accuracy obj (mean)",
        "comprehensiveness obj (mean)",
        "faithfulness obj (mean)",
        "frac_reward_zero_std",
        "difficulty=hard",
        "kind=diagnosis",
    ] {
        assert!(text.contains(expected), "`{expected}` missing:\n{text}");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["evaluations"].as_array().unwrap().len(),
        6,
        "3 models × greedy/sampled"
    );
    assert_eq!(report["training"].as_array().unwrap().len(), 2);
    // The HTML report overlays both arms: each objective's curve, one point per step, per arm.
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    for objective in [
        "accuracy",
        "clinical_reasoning",
        "faithfulness",
        "comprehensiveness",
    ] {
        for arm in ["grpo", "crpo-full"] {
            let path = format!("data-series=\"objective/{objective}\" data-run=\"{arm}\" data-points=\"2\"");
            assert!(html.contains(&path), "{path} missing from the report");
        }
    }
    assert!(text.contains(&format!("charts: {}", out_dir.join("report.html").display())));
    for arm in ["grpo", "crpo-full"] {
        let config = std::fs::read_to_string(out_dir.join(format!("{arm}.toml"))).unwrap();
        assert!(
            config.contains("max_steps = 2") && config.contains(&format!("preset = \"{arm}\"")),
            "{config}"
        );
        assert!(out_dir
            .join(format!("{arm}/checkpoints/step-000002/model/config.json"))
            .exists());
    }

    // Every hint the demo prints runs as printed (here: the GRPO arm again, and its eval).
    let hints: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("crpo-host "))
        .collect();
    assert_eq!(hints.len(), 4, "{text}");
    for hint in [hints[1], hints[3]] {
        let words: Vec<&str> = hint.split_whitespace().collect();
        let again = crpo_host(&words);
        assert!(again.status.success(), "crpo-host {hint}: {}", stderr(&again));
    }
    let metrics = |dir: &str| {
        std::fs::read_to_string(out_dir.join(dir).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                for key in crpo_host::train::metrics::MACHINE_KEYS {
                    v.as_object_mut().unwrap().remove(key);
                }
                v
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        metrics("grpo"),
        metrics("grpo-again"),
        "the printed command reproduces the arm"
    );

    let again = crpo_host(&args);
    assert!(
        !again.status.success() && stderr(&again).contains("--overwrite"),
        "a previous demo is not silently replaced"
    );
}

/// Ctrl-C during the demo stops it at once, saying how to start it again; that command then
/// replaces what the interrupted demo left.
#[test]
fn an_interrupted_demo_says_how_to_start_it_again_and_that_works() {
    use std::io::{BufRead, BufReader};
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("demo");
    let args = short_demo(out_dir.to_str().unwrap());
    let mut demo = Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .args(args)
        .env_remove("CRPO_PLUGIN_PATH")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read until the cold start begins; kept open so that the demo's later lines are not lost.
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    assert!(lines.any(|line| line.is_ok_and(|l| l.starts_with("1/"))));
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(demo.id() as i32, libc::SIGINT) };
    let output = demo.wait_with_output().unwrap();
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(130), "{message}");
    assert!(
        message.contains("error: stopped by SIGINT") && message.contains("with --overwrite starts it again"),
        "{message}"
    );
    assert!(!out_dir.join("report.json").exists(), "it stopped before its end");
    drop(lines);
    let again = crpo_host(&[&args[..], &["--overwrite"]].concat());
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(out_dir.join("report.json").exists());
}

#[test]
fn train_loads_reward_plugins_from_the_configs_plugin_dirs() {
    // option_coverage: the ≤ 30-line shorthand objective of docs/plugin-authoring.md §1.
    let plugins = plugin_dir(&["contraindication_safety", "option_coverage"]);
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(&dir.path().join("model"), 0).unwrap();
    let data = support::workspace_root().join("data/demo/train.jsonl");
    let config = format!(
        r#"
[run]
output_dir = "run"
max_steps = 1
plugin_dirs = ["{plugins}"]
[model]
path = "model"
[data]
path = "{data}"
[reward]
preset = "crpo"
[[reward.objectives]]
plugin = "contraindication_safety"
[[reward.objectives]]
plugin = "option_coverage"
options = {{ others_only = true }}
[algorithm]
num_generations = 2
prompts_per_step = 2
mini_batch_size = 4
gradient_accumulation_steps = 1
max_completion_length = 8
"#,
        plugins = plugins.path().display(),
        data = data.display()
    );
    let path = dir.path().join("run.toml");
    std::fs::write(&path, config).unwrap();
    let output = crpo_host(&["train", "--config", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let record: Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    assert!(
        record["objectives"]["contraindication_safety"]["mean"].is_number(),
        "{record}"
    );
    assert!(
        record["objectives"]["clinical_reasoning"]["mean"].is_number(),
        "{record}"
    );
    assert!(
        record["objectives"]["option_coverage"]["mean"].is_number(),
        "{record}"
    );
}

/// bench/gpu_check.sh dry-runs on the CPU (the tiny preset, small sizes): every step the GPU
/// run takes, so the script cannot rot between the sessions that have a GPU.
#[test]
fn the_gpu_check_dry_runs_on_the_cpu() {
    let out = tempfile::tempdir().unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_crpo-host"))
        .parent()
        .unwrap();
    let output = Command::new("bash")
        .arg(support::workspace_root().join("bench/gpu_check.sh"))
        .args(["--device", "cpu", "--bin", bin.to_str().unwrap(), "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for step in [
        "== 1. doctor",
        "== 2. numerics",
        "== 3. rollout engine",
        "== 3c. graphed decode steps against eager ones",
        "== 4. CRPO steps",
        "== 6. the distributed path, world size 1",
    ] {
        assert!(text.contains(step), "{step} missing:\n{text}");
    }
    let results = std::fs::read_to_string(out.path().join("gpu_check.jsonl")).unwrap();
    let records: Vec<Value> = results
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 4, "{results}");
    assert!(records[0]["tokens_per_s"].as_f64().unwrap() > 0.0);
    // Step 3c compared the two ways of decoding (both eager on the CPU: every row the same).
    assert_eq!(records[1]["eager_identical_rows"], 16, "{results}");
    assert!(records[2]["step_seconds"].as_f64().unwrap() > 0.0);
    // The distributed path ran (Gloo here, NCCL on a GPU) and timed its collectives.
    assert_eq!(records[3]["distributed_world_size_1"], true, "{results}");
    assert!(records[3]["communication_s"].as_f64().unwrap() > 0.0, "{results}");
    // metrics.jsonl's peak resident memory reaches the script's record.
    assert!(records[2]["peak_rss_gib"].as_f64().unwrap() > 0.0, "{results}");
    assert!(text.contains("attention (SDPA) kernel"), "{text}");
}

/// Sampled evaluation seeded each batch of questions: `eval.batch_size`, a memory setting,
/// changed every sample and the voted accuracy with it.
#[test]
fn sampled_eval_does_not_depend_on_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    crpo_plugins_policy::presets::write_tiny(&dir.path().join("model"), 0).unwrap();
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/demo/eval.jsonl");
    let completions = |batch_size: usize| {
        let config = dir.path().join(format!("b{batch_size}.toml"));
        std::fs::write(
            &config,
            format!(
                "[model]\npath = \"{}\"\n[data]\npath = \"{}\"\n[reward]\npreset = \"crpo\"\n[eval]\nnum_generations_eval = 3\ntemperature = 1.0\nmax_completion_length = 8\nlimit = 5\nbatch_size = {batch_size}\n",
                dir.path().join("model").display(),
                data.display()
            ),
        )
        .unwrap();
        let out = dir.path().join(format!("b{batch_size}.jsonl"));
        let output = crpo_host(&[
            "eval",
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--output-completions",
            out.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0]["completions"].as_array().map(Vec::len), Some(3));
        lines.iter().map(|l| l["completions"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(completions(1), completions(4));
}
