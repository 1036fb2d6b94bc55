//! Python reward functions written for TRL's GRPOTrainer run unchanged as crpo objectives,
//! through the `python` plugin library (plugins/python-rewards) that `crpo-host --plugins`
//! loads: exact scores, `None` as not applicable, errors naming the function and the file,
//! and a training run whose metrics carry the objective under its own name.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};

/// Functions in the style of TRL's documentation, unchanged: conversational completions are
/// `[{"role": "assistant", "content": …}]`, dataset columns arrive as keyword arguments.
const REWARDS: &str = r#"import itertools
import math
import re


def format_reward(completions, **kwargs):
    """Reward function that checks if the completion has a specific format."""
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, content) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]


def accuracy_reward(completions, solution, **kwargs):
    """1 when the boxed answer is the dataset's `solution` column."""
    contents = [completion[0]["content"] for completion in completions]
    rewards = []
    for content, sol in zip(contents, solution):
        match = re.search(r"\\boxed\{(.*?)\}", content)
        rewards.append(1.0 if match and match.group(1) == sol else 0.0)
    return rewards


def gold_option_reward(prompts, completions, completion_ids, answer, **kwargs):
    """Names the gold option's text: +0.5, else -0.5; None without a gold answer."""
    assert completion_ids is None, "crpo-host score has no token ids"
    assert prompts[0][-1]["role"] == "user", prompts
    rewards = []
    for completion, gold, options in zip(completions, answer, kwargs.get("options", [None] * len(answer))):
        if gold is None:
            rewards.append(None)
        else:
            rewards.append(0.5 if options[gold] in completion[0]["content"] else -0.5)
    return rewards


def broken_reward(completions, **kwargs):
    scale = 0
    return [math.sqrt(4) / scale for _ in completions]


def group_size_reward(completions, **kwargs):
    return [float(len(completions))] * len(completions)


def endless_reward(completions, **kwargs):
    return itertools.repeat(1.0)


def chatty_reward(completions, **kwargs):
    import os, subprocess
    print("scoring", len(completions), "completions")
    # Past sys.stdout: the file descriptor itself, and a checker run as a subprocess.
    os.write(1, b"from os.write\n")
    subprocess.run(["echo", "from a subprocess"], check=True)
    return [1.0 for _ in completions]


def huge_reward(completions, **kwargs):
    return [1e300 for _ in completions]


def huge_int_reward(completions, **kwargs):
    return [10**400 for _ in completions]


_judge_loop = None


async def async_reward(completions, **kwargs):
    """TRL awaits async reward functions, on one loop: a client bound to the loop of its
    first call (an AsyncOpenAI judge) keeps working."""
    global _judge_loop
    import asyncio
    running = asyncio.get_running_loop()
    if _judge_loop is None:
        _judge_loop = running
    assert running is _judge_loop, "another event loop than the first call's"
    await asyncio.sleep(0)
    return [0.25 for _ in completions]


async def async_broken_reward(completions, **kwargs):
    raise ValueError("no score")


def solution_reward(completions, solution, **kwargs):
    """TRL's standard form: text completions, the gold in the dataset's `solution` column."""
    return [1.0 if "\\boxed{" + str(s) + "}" in c else 0.0 for c, s in zip(completions, solution)]


def source_reward(completions, source, **kwargs):
    """A column only some rows have: None in the others, as `datasets` gives it."""
    return [0.0 if s is None else 1.0 for s in source]


def wrong_length_reward(completions, **kwargs):
    return [1.0] * (len(completions) + 1)


def token_count_reward(prompts, completions, completion_ids, answer, options, **kwargs):
    """Standard (text) format in training: strings, and the completions' token ids."""
    assert isinstance(prompts[0], str) and isinstance(completions[0], str)
    assert len(completion_ids) == len(completions), completion_ids
    assert all(isinstance(t, int) for ids in completion_ids for t in ids)
    assert isinstance(options[0], dict) and isinstance(answer[0], str)
    return [float(len(ids)) for ids in completion_ids]
"#;

fn crpo_host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crpo-host"))
        .args(args)
        .env_remove("CRPO_PLUGIN_PATH")
        .env_remove("VIRTUAL_ENV")
        .output()
        .expect("crpo-host runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `crpo-host score` with the one objective `python` calling `function` of `file`.
fn score(plugins: &Path, input: &Path, file: &Path, function: &str) -> Result<Vec<Value>, String> {
    let options = json!({"python": {"file": file, "function": function}}).to_string();
    let output = crpo_host(&[
        "--plugins",
        plugins.to_str().unwrap(),
        "score",
        "--objectives",
        "python",
        "--options",
        &options,
        "--input",
        input.to_str().unwrap(),
    ]);
    if !output.status.success() {
        return Err(stderr(&output));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect())
}

/// `crpo-host score` of `rows` (written as a JSONL file beside `file`) read by the dataset
/// reader `dataset` (its name, then any flags), with `objectives`, the objective `python`
/// calling `function`: the output rows.
fn score_rows(
    plugins: &Path,
    file: &Path,
    (function, objectives): (&str, &str),
    dataset: &[&str],
    rows: &[Value],
) -> Vec<Value> {
    let input = file.with_file_name(format!("{function}.jsonl"));
    let text: Vec<String> = rows.iter().map(Value::to_string).collect();
    std::fs::write(&input, text.join("\n")).unwrap();
    let options = json!({"python": {"file": file, "function": function}}).to_string();
    let mut args = vec![
        "--plugins",
        plugins.to_str().unwrap(),
        "score",
        "--objectives",
        objectives,
        "--options",
        &options,
        "--input",
        input.to_str().unwrap(),
        "--dataset",
    ];
    args.extend_from_slice(dataset);
    let output = crpo_host(&args);
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn line_of(source: &str, code: &str) -> usize {
    1 + source.lines().position(|l| l.contains(code)).unwrap()
}

#[test]
fn trl_reward_functions_score_unchanged_and_fail_naming_function_and_file() {
    let plugins = support::python_plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rewards.py");
    std::fs::write(&file, REWARDS).unwrap();
    // Conversational examples (chat messages), as crpo's own example JSON.
    let messages = json!({"messages": [
        {"role": "system", "content": "Think in <think>, answer in <answer>."},
        {"role": "user", "content": "Which analgesic is safest with warfarin?"},
    ]});
    let with_gold = json!({"id": "q1", "prompt": messages, "answer": "B",
        "options": [{"key": "A", "text": "Ibuprofen"}, {"key": "B", "text": "Acetaminophen"}],
        "metadata": {"solution": "B"}});
    let without_gold = json!({"id": "q2", "prompt": messages, "metadata": {"solution": "C"}});
    let records = [
        json!({"example": with_gold, "completion": "<think>NSAIDs bleed.</think><answer>\\boxed{B} Acetaminophen</answer>"}),
        json!({"example": with_gold, "completion": "<think>pain</think>\n<answer>\\boxed{A}</answer>"}),
        json!({"example": without_gold, "completion": "<think>x</think><answer>\\boxed{C}</answer>"}),
    ];
    let input = dir.path().join("completions.jsonl");
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();

    let scores = |function: &str| -> Vec<f64> {
        let rows =
            score(plugins.path(), &input, &file, function).unwrap_or_else(|e| panic!("{function}: {e}"));
        rows.iter()
            .map(|row| row["scores"]["python"]["score"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(scores("format_reward"), [1.0, 0.0, 1.0]);
    assert_eq!(scores("accuracy_reward"), [1.0, 0.0, 1.0]);
    // Consecutive records of one example are one group, as in training.
    assert_eq!(scores("group_size_reward"), [2.0, 2.0, 1.0]);
    let rows = score(plugins.path(), &input, &file, "gold_option_reward").unwrap();
    let got: Vec<(f64, f64)> = rows
        .iter()
        .map(|row| {
            let score = &row["scores"]["python"];
            (
                score["score"].as_f64().unwrap(),
                score["diagnostics"]["not_applicable"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [(0.5, 0.0), (-0.5, 0.0), (0.0, 1.0)],
        "None: 0 and not applicable"
    );

    let file_name = file.canonicalize().unwrap().display().to_string();
    let raised = score(plugins.path(), &input, &file, "broken_reward").unwrap_err();
    let line = line_of(REWARDS, "/ scale");
    for part in [
        "`broken_reward`".to_string(),
        "ZeroDivisionError: float division by zero".to_string(),
        format!("{file_name}:{line}"),
    ] {
        assert!(raised.contains(&part), "{part} missing from: {raised}");
    }
    let wrong = score(plugins.path(), &input, &file, "wrong_length_reward").unwrap_err();
    assert!(
        wrong.contains("`wrong_length_reward`")
            && wrong.contains(&file_name)
            && wrong.contains("returned 3 rewards for 2 completions"),
        "{wrong}"
    );
    let endless = score(plugins.path(), &input, &file, "endless_reward").unwrap_err();
    assert!(
        endless.contains("returned more than 2 rewards for 2 completions"),
        "{endless}"
    );
    assert_eq!(scores("async_reward"), [0.25, 0.25, 0.25]);
    // A column a reader maps as the gold (`solution`, TRL's name) still reaches the function.
    let jsonl = ["jsonl", "--dataset-options", r#"{"answer": "solution"}"#];
    let rows = [
        json!({"question": "Normal adult heart rate at rest, per minute?", "solution": 70, "completion": "\\boxed{70}"}),
        json!({"question": "Normal adult heart rate at rest, per minute?", "solution": 70, "completion": "\\boxed{120}"}),
    ];
    let scored = score_rows(
        plugins.path(),
        &file,
        ("solution_reward", "python,exact_match"),
        &jsonl,
        &rows,
    );
    let both = |row: &Value| {
        (
            row["scores"]["python"]["score"].as_f64().unwrap(),
            row["scores"]["exact_match"]["score"].as_f64().unwrap(),
        )
    };
    assert_eq!(
        scored.iter().map(both).collect::<Vec<_>>(),
        [(1.0, 1.0), (0.0, 0.0)]
    );
    let python = |rows: Vec<Value>| -> Vec<f64> {
        rows.iter()
            .map(|row| row["scores"]["python"]["score"].as_f64().unwrap())
            .collect()
    };
    // A column only the first record has is None in the second's call (it failed there:
    // "missing 1 required positional argument").
    let rows = [
        json!({"question": "Heart rate?", "solution": 70, "source": "ward", "completion": "70"}),
        json!({"question": "Resting heart rate?", "solution": 70, "completion": "70"}),
    ];
    let sparse = score_rows(plugins.path(), &file, ("source_reward", "python"), &jsonl, &rows);
    assert_eq!(python(sparse), [1.0, 0.0]);
    // TRL's prompt-completion records of one prompt, read by a reader: one group too (the
    // reader took each `completion` as its record's reference, so none grouped).
    let prompt = json!([{"role": "user", "content": "Heart rate?"}]);
    let rows = [
        json!({"prompt": prompt, "completion": [{"role": "assistant", "content": "70"}]}),
        json!({"prompt": prompt, "completion": [{"role": "assistant", "content": "80"}]}),
    ];
    let grouped = score_rows(
        plugins.path(),
        &file,
        ("group_size_reward", "python"),
        &["conversational"],
        &rows,
    );
    assert_eq!(python(grouped), [2.0, 2.0]);
    let raised_later = score(plugins.path(), &input, &file, "async_broken_reward").unwrap_err();
    assert!(
        raised_later.contains("`async_broken_reward`") && raised_later.contains("ValueError: no score"),
        "{raised_later}"
    );
    // print(), os.write(1, …) and subprocesses go to standard error: standard output stays
    // score's JSONL.
    assert_eq!(scores("chatty_reward"), [1.0, 1.0, 1.0]);
    let huge = score(plugins.path(), &input, &file, "huge_reward").unwrap_err();
    assert!(huge.contains("beyond the range of a reward"), "{huge}");
    let huge_int = score(plugins.path(), &input, &file, "huge_int_reward").unwrap_err();
    assert!(huge_int.contains("beyond the range of a reward"), "{huge_int}");
    let missing = score(plugins.path(), &input, &file, "no_such_reward").unwrap_err();
    assert!(
        missing.contains("option `function`")
            && missing.contains("no_such_reward")
            && missing.contains(&file_name),
        "{missing}"
    );
    let bad = dir.path().join("bad.py");
    std::fs::write(
        &bad,
        "import re\n\ndef reward(completions, **kwargs:\n    return []\n",
    )
    .unwrap();
    let syntax = score(plugins.path(), &input, &bad, "reward").unwrap_err();
    let bad_name = bad.canonicalize().unwrap().display().to_string();
    assert!(
        syntax.contains("SyntaxError") && syntax.contains(&format!("{bad_name}:3")),
        "{syntax}"
    );
    let absent = score(plugins.path(), &input, &dir.path().join("absent.py"), "reward").unwrap_err();
    assert!(
        absent.contains("option `file`") && absent.contains("absent.py"),
        "{absent}"
    );
}

#[test]
fn a_python_objective_trains_under_its_own_name() {
    let plugins = support::python_plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rewards.py"), REWARDS).unwrap();
    crpo_plugins_policy::presets::write_tiny(&dir.path().join("model"), 0).unwrap();
    let file = dir.path().join("rewards.py");
    let config = token_count_run(plugins.path(), 1, file.to_str().unwrap());
    let path = dir.path().join("run.toml");
    std::fs::write(&path, config).unwrap();
    let output = crpo_host(&["train", "--config", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let record: Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    let mean = record["objectives"]["token_count"]["mean"].as_f64();
    assert!(
        mean.is_some_and(|tokens| tokens > 0.0 && tokens <= 8.0),
        "{record}"
    );
    assert_eq!(
        record["diagnostics"]["token_count/not_applicable"], 0.0,
        "{record}"
    );
}

/// A run config of `steps` steps into `run` from `model` (beside the config) whose reward is
/// `token_count_reward` of `file` (weight 0.5), under the name `token_count`.
fn token_count_run(plugins: &Path, steps: usize, file: &str) -> String {
    format!(
        r#"
[run]
output_dir = "run"
max_steps = {steps}
plugin_dirs = ["{plugins}"]
[model]
path = "model"
[data]
path = "{data}"
[[reward.objectives]]
plugin = "python"
name = "token_count"
weight = 0.5
options = {{ file = "{file}", function = "token_count_reward" }}
[algorithm]
{algorithm}"#,
        plugins = plugins.display(),
        algorithm = support::TINY_ALGORITHM,
        data = support::workspace_root().join("data/demo/train.jsonl").display(),
    )
}

/// The plugin resolves a relative `file` against the working directory: a resume from
/// another directory whose `rewards.py` differs is refused naming the option; from the
/// directory the run started in it goes on.
#[test]
fn a_resume_that_would_read_another_python_file_is_refused() {
    let plugins = support::python_plugin_dir();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rewards.py"), REWARDS).unwrap();
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("rewards.py"), format!("{REWARDS}\n# edited\n")).unwrap();
    crpo_plugins_policy::presets::write_tiny(&dir.path().join("model"), 0).unwrap();
    let config = |steps: usize| token_count_run(plugins.path(), steps, "rewards.py");
    let path = dir.path().join("run.toml");
    let train = |cwd: &Path, resume: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_crpo-host"));
        command.args(["train", "--config", path.to_str().unwrap()]);
        if resume {
            command.arg("--resume");
        }
        command
            .current_dir(cwd)
            .env_remove("CRPO_PLUGIN_PATH")
            .env_remove("VIRTUAL_ENV")
            .output()
            .unwrap()
    };
    std::fs::write(&path, config(1)).unwrap();
    let first = train(dir.path(), false);
    assert!(first.status.success(), "{}", stderr(&first));
    std::fs::write(&path, config(2)).unwrap();
    let elsewhere = train(&other, true);
    assert!(!elsewhere.status.success());
    assert!(
        stderr(&elsewhere).contains("reward.objectives[token_count].options.file (its contents)"),
        "{}",
        stderr(&elsewhere)
    );
    let here = train(dir.path(), true);
    assert!(here.status.success(), "{}", stderr(&here));
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
}
