//! Datasets beyond multiple choice, and `crpo-host data check` over every reader's real
//! layouts: what a user runs before a long run.

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn crpo_host(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .args(args)
        .current_dir(dir)
        .env_remove("CRPO_PLUGIN_PATH")
        .env("RUST_LOG", "warn")
        .output()
        .expect("crpo-host runs")
}

fn fixture(name: &str) -> PathBuf {
    support::workspace_root().join("tests/fixtures/data").join(name)
}

fn write_lines(dir: &Path, name: &str, records: &[Value]) -> PathBuf {
    let path = dir.join(name);
    let text: Vec<String> = records.iter().map(Value::to_string).collect();
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
    path
}

/// `data check --json` of one file: its report.
fn check(dir: &Path, dataset: &str, path: &Path, extra: &[&str]) -> (Value, Output) {
    let mut args = vec![
        "data",
        "check",
        "--dataset",
        dataset,
        "--path",
        path.to_str().unwrap(),
        "--json",
    ];
    args.extend(extra);
    let output = crpo_host(dir, &args);
    let reports: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("no JSON report: {}", String::from_utf8_lossy(&output.stderr)));
    (reports[0].clone(), output)
}

fn answers(report: &Value) -> Vec<(String, u64)> {
    report["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| (pair[0].as_str().unwrap().to_string(), pair[1].as_u64().unwrap()))
        .collect()
}

#[test]
fn data_check_reads_every_readers_real_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = |dataset: &str, path: &Path, extra: &[&str]| {
        let (report, output) = check(d, dataset, path, extra);
        assert!(
            output.status.success(),
            "{dataset}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(report["malformed"], 0, "{report}");
        report
    };
    // MedQA: the shipped JSONL and the same rows as Parquet (options a struct column, E null).
    let medqa = ok("medqa", &fixture("medqa.parquet"), &[]);
    assert_eq!(medqa["examples"], 8);
    assert_eq!(medqa["options_per_example"], json!({"4": 8}));
    let demo = ok(
        "medqa",
        &support::workspace_root().join("data/demo/eval.jsonl"),
        &[],
    );
    assert!(demo["examples"].as_u64().unwrap() > 8);
    // MedMCQA: the original release's 1-based `cop` and the Hugging Face export's 0-based one.
    let medmcqa = |cop: u64| {
        json!({"id": "m1", "question": "Drug of choice?", "opa": "aspirin", "opb": "heparin",
        "opc": "warfarin", "opd": "alteplase", "cop": cop, "choice_type": "single", "exp": null})
    };
    let original = write_lines(d, "medmcqa_original.jsonl", &[medmcqa(4), medmcqa(2)]);
    assert_eq!(
        answers(&ok("medmcqa", &original, &[])),
        [("B".into(), 1), ("D".into(), 1)]
    );
    let hf = write_lines(d, "medmcqa_hf.jsonl", &[medmcqa(0), medmcqa(2)]);
    let hf_report = ok("medmcqa", &hf, &[]);
    assert_eq!(answers(&hf_report), [("A".into(), 1), ("C".into(), 1)]);
    // Both rows are `m1`: said in the report (it was a log warning only).
    assert_eq!(
        (&hf_report["repeated_ids"], &hf_report["first_repeated_id"]),
        (&json!(1), &json!("m1"))
    );
    // MedQA as pandas' `DataFrame.to_json()` writes it by default: a column per field.
    let columns = d.join("medqa_pandas.json");
    let rows = json!({
        "question": {"0": "Fever and cough?", "1": "Chest pain?"},
        "options": {"0": {"A": "flu", "B": "cold"}, "1": {"A": "angina", "B": "reflux"}},
        "answer_idx": {"0": "A", "1": "B"}
    });
    std::fs::write(&columns, rows.to_string()).unwrap();
    let pandas = ok("medqa", &columns, &[]);
    assert_eq!(answers(&pandas), [("A".into(), 1), ("B".into(), 1)]);
    assert_eq!(pandas["repeated_ids"], 0);
    // PubMedQA: ori_pqal.json (one object keyed by PMID) and the Hugging Face rows.
    let original = d.join("ori_pqal.json");
    std::fs::write(
        &original,
        json!({"21645374": {"QUESTION": "Do mitochondria play a role?", "CONTEXTS": ["Programmed cell death."],
            "LABELS": ["BACKGROUND"], "MESHES": [], "YEAR": "2011", "reasoning_required_pred": "yes",
            "reasoning_free_pred": "yes", "final_decision": "yes", "LONG_ANSWER": "Yes."}})
        .to_string(),
    )
    .unwrap();
    assert_eq!(answers(&ok("pubmedqa", &original, &[])), [("A".into(), 1)]);
    let rows = write_lines(
        d,
        "pqa_labeled.jsonl",
        &[
            json!({"pubid": 25429730, "question": "Are group 2 ILCs required?",
            "context": {"contexts": ["ILC2s."], "labels": ["BACKGROUND"], "meshes": []},
            "long_answer": "No.", "final_decision": "no"}),
        ],
    );
    assert_eq!(answers(&ok("pubmedqa", &rows, &[])), [("B".into(), 1)]);
    // MedXpertQA (Text): ten options, the label a letter.
    let options: serde_json::Map<String, Value> = "ABCDEFGHIJ"
        .chars()
        .map(|c| (c.to_string(), json!(format!("option {c}"))))
        .collect();
    let xpert = write_lines(
        d,
        "medxpertqa.jsonl",
        &[
            json!({"id": "Text-1", "question": "Q? Answer Choices: (A) …", "options": options, "label": "C",
            "medical_task": "Diagnosis", "body_system": "Cardiovascular", "question_type": "Reasoning"}),
        ],
    );
    let xpert = ok("medxpertqa", &xpert, &[]);
    assert_eq!(xpert["options_per_example"], json!({"10": 1}));
    // Conversational messages with free-text answers, and free-text rows in Parquet.
    let chat = ok("conversational", &fixture("free_text.jsonl"), &["--show", "1"]);
    assert_eq!(chat["examples"], 24);
    assert_eq!(chat["options_per_example"], json!({"0": 24}));
    let shown = chat["shown"][0]["prompt"].as_str().unwrap();
    assert!(
        shown.starts_with("system: You are a careful clinician."),
        "{shown}"
    );
    let parquet = ok("jsonl", &fixture("free_text.parquet"), &[]);
    assert_eq!(parquet["examples"], 24);
    assert_eq!(
        answers(&parquet),
        answers(&chat),
        "the same questions in both files"
    );
    // Text stored as bytes reads as text; a NaN or non-text value makes its row malformed,
    // naming the column (it read as no gold answer, or as base64).
    let (odd, output) = check(d, "jsonl", &fixture("odd_values.parquet"), &[]);
    assert!(!output.status.success());
    assert_eq!(odd["examples"], 1);
    assert!(odd["shown"][0]["prompt"]
        .as_str()
        .unwrap()
        .starts_with("user: What is 2 + 2?"));
    let malformed = odd["malformed_records"].to_string();
    assert!(
        malformed.contains("odd_values.parquet:2") && malformed.contains("column `answer`: NaN"),
        "{malformed}"
    );
    assert!(
        malformed.contains("odd_values.parquet:3") && malformed.contains("column `question`: binary data"),
        "{malformed}"
    );
}

#[test]
fn data_check_lists_every_malformed_record_and_renders_prompts_with_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good =
        json!({"question": "Which drug?", "options": {"A": "aspirin", "B": "heparin"}, "answer_idx": "B"});
    let mut records = vec![good.clone(); 3];
    records.insert(
        1,
        json!({"question": "Which?", "options": {"A": "x"}, "answer_idx": "E"}),
    );
    records.push(json!({"options": {"A": "x"}, "answer_idx": "A"}));
    let path = write_lines(d, "train.jsonl", &records);
    let (report, output) = check(d, "medqa", &path, &["--max-errors", "1"]);
    assert!(!output.status.success(), "malformed records fail the check");
    assert_eq!(
        (report["examples"].as_u64(), report["malformed"].as_u64()),
        (Some(3), Some(2))
    );
    let listed = report["malformed_records"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "--max-errors");
    assert!(listed[0]
        .as_str()
        .unwrap()
        .ends_with("train.jsonl:2: field `answer_idx`: `E` is not one of the options"));
    let text = crpo_host(
        d,
        &["data", "check", "--dataset", "medqa", "--path", "train.jsonl"],
    );
    let table = String::from_utf8_lossy(&text.stdout);
    assert!(
        table.contains("train.jsonl:5: field `question`: missing"),
        "{table}"
    );
    assert!(String::from_utf8_lossy(&text.stderr).contains("2 malformed record(s)"));
    let (_, none_listed) = check(d, "medqa", &path, &["--max-errors", "0"]);
    assert!(String::from_utf8_lossy(&none_listed.stderr).contains("raise --max-errors to list them"));
    // An empty file fails the check; a record of megabytes is not printed whole.
    std::fs::write(d.join("empty.jsonl"), "\n").unwrap();
    let (report, empty) = check(d, "medqa", &d.join("empty.jsonl"), &[]);
    assert_eq!(report["examples"], 0);
    assert!(
        !empty.status.success() && String::from_utf8_lossy(&empty.stderr).contains("holds no examples"),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );
    let huge =
        json!({"question": "why? ".repeat(200_000), "options": {"A": "x", "B": "y"}, "answer_idx": "A"});
    let huge = write_lines(d, "huge.jsonl", &[huge]);
    let (report, _) = check(d, "medqa", &huge, &[]);
    let shown = report["shown"][0]["prompt"].as_str().unwrap();
    assert!(
        shown.len() < 20_000 && shown.contains("more characters not shown"),
        "{}",
        shown.len()
    );
    // `--dataset-options`, score's name for the reader's options, is taken too.
    for flag in ["--options", "--dataset-options"] {
        let not_an_object = crpo_host(
            d,
            &[
                "data",
                "check",
                "--dataset",
                "jsonl",
                "--path",
                "train.jsonl",
                flag,
                "[1]",
            ],
        );
        let said = String::from_utf8_lossy(&not_an_object.stderr);
        assert!(
            !not_an_object.status.success() && said.contains("--options must be a JSON object"),
            "{flag}: {said}"
        );
    }

    // With a config: the model's chat template, the preset's system prompt, token lengths.
    crpo_plugins_policy::presets::write_tiny(&d.join("model"), 0).unwrap();
    let clean = write_lines(d, "clean.jsonl", &vec![good; 4]);
    let report_with = |limit: usize| {
        std::fs::write(
            d.join("run.toml"),
            format!(
                "[model]\npath = \"model\"\n[data]\npath = \"{}\"\n[reward]\npreset = \"crpo\"\n[algorithm]\nmax_prompt_length = {limit}\n",
                clean.display()
            ),
        )
        .unwrap();
        let output = crpo_host(
            d,
            &["data", "check", "--config", "run.toml", "--json", "--show", "1"],
        );
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        (report[0].clone(), output)
    };
    let (roomy, output) = report_with(4096);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let prompt = roomy["shown"][0]["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("<|im_start|>system") && prompt.contains("A. aspirin\nB. heparin"),
        "{prompt}"
    );
    let length = roomy["prompt_tokens"]["max"].as_u64().unwrap();
    assert!(
        length > 20 && roomy["prompt_tokens"]["over_limit"] == 0,
        "{roomy}"
    );
    // Below the prompts' length: every one is over, and the run could not ask them.
    let (tight, output) = report_with(20);
    assert_eq!(tight["prompt_tokens"]["over_limit"], 4, "{tight}");
    // … so the check fails, as the run would refuse them.
    assert_eq!(tight["cannot_be_asked"], 4, "{tight}");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && said.contains("4 example(s) cannot be asked"),
        "{said}"
    );
    let prompt = tight["shown"][0]["prompt"].as_str().unwrap();
    assert!(
        prompt.starts_with("[cannot be asked:") && prompt.contains("max_prompt_length = 20"),
        "{prompt}"
    );
}

/// A `messages` JSONL and a Parquet file of free-text questions train (exact_match as the
/// accuracy objective) and evaluate.
#[test]
fn free_text_questions_train_and_evaluate_from_messages_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crpo_plugins_policy::presets::write_tiny(&d.join("model"), 0).unwrap();
    for (dataset, file) in [
        ("conversational", "free_text.jsonl"),
        ("jsonl", "free_text.parquet"),
    ] {
        let config = format!(
            r#"
[run]
output_dir = "{dataset}"
max_steps = 1
eval_steps = 1
[model]
path = "model"
device = "cpu"
[data]
dataset = "{dataset}"
path = "{path}"
eval_fraction = 0.25
system_prompt = "Put the final answer in \\boxed{{}}."
[[reward.objectives]]
plugin = "exact_match"
[[reward.objectives]]
plugin = "consistency"
[algorithm]
{algorithm}[eval]
limit = 3
"#,
            path = fixture(file).display(),
            algorithm = support::TINY_ALGORITHM
        );
        std::fs::write(d.join("run.toml"), config).unwrap();
        let output = crpo_host(d, &["train", "--config", "run.toml"]);
        assert!(
            output.status.success(),
            "{dataset}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let metrics = std::fs::read_to_string(d.join(dataset).join("metrics.jsonl")).unwrap();
        let last: Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
        assert!(last["objectives"]["exact_match"]["mean"].is_number(), "{last}");
        assert_eq!(last["eval"]["greedy"]["questions"], 3, "{last}");
        assert!(last["eval"]["greedy"]["accuracy"].is_number(), "{last}");
        let eval = crpo_host(
            d,
            &[
                "eval",
                "--config",
                "run.toml",
                "--limit",
                "2",
                "--output",
                "eval.json",
            ],
        );
        assert!(
            eval.status.success(),
            "{dataset}: {}",
            String::from_utf8_lossy(&eval.stderr)
        );
        // Objectives that state no answers: the share right cannot count any, and says so.
        let no_answers = std::fs::read_to_string(d.join("run.toml"))
            .unwrap()
            .replace("[[reward.objectives]]\nplugin = \"exact_match\"\n", "");
        std::fs::write(d.join("no_answers.toml"), no_answers).unwrap();
        let eval = crpo_host(d, &["eval", "--config", "no_answers.toml", "--limit", "2"]);
        let stderr = String::from_utf8_lossy(&eval.stderr);
        assert!(eval.status.success(), "{dataset}: {stderr}");
        assert!(
            stderr.contains("objective `consistency` stated no answer for any question"),
            "{dataset}: {stderr}"
        );
    }
}

/// A Parquet file corrupted inside its pages decoded to rows without end (CPU and memory
/// growing until killed): it is refused once its rows outnumber what its footer declares.
#[test]
fn a_parquet_file_corrupt_inside_its_pages_is_refused_not_read_forever() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(fixture("medqa.parquet")).unwrap();
    for byte in &mut bytes[4..20] {
        *byte ^= 0xff;
    }
    let corrupt = dir.path().join("corrupt.parquet");
    std::fs::write(&corrupt, bytes).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .args(["data", "check", "--dataset", "medqa", "--path"])
        .arg(&corrupt)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("still reading the corrupt file after a minute");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("corrupt.parquet") && stderr.contains("corrupt"),
        "{stderr}"
    );
}
