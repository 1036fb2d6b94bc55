//! Per-completion cost of a reward function written in Python (TRL's convention, through the
//! `python` plugin library loaded as `crpo-host --plugins` loads it) against the same format
//! check compiled into Rust, over 10,000 completions in groups of 16 with their token ids, as
//! the trainer scores them.
//! Run: `cargo bench -p crpo-host --bench python_reward`

#[path = "../tests/support/mod.rs"]
mod support;

use crpo_host::plugins::{ConfiguredObjective, ObjectiveSpec, PluginRegistry};
use crpo_sdk::{Example, RewardObjective, Score, ScoreRequest};
use regex::Regex;
use std::hint::black_box;
use std::time::Instant;

const GROUP: usize = 16;
const COMPLETIONS: usize = 10_000;
const ROUNDS: usize = 5;

/// TRL's documented format reward (standard format: completions are strings), and a function
/// that reads nothing: the cost of the call and its arguments alone.
const REWARDS: &str = r#"import re


def format_reward(completions, **kwargs):
    """Reward function that checks if the completion has a specific format."""
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    matches = [re.match(pattern, content) for content in completions]
    return [1.0 if match else 0.0 for match in matches]


def constant_reward(completions, **kwargs):
    return [0.0] * len(completions)
"#;

/// The same check compiled: Python's `$` also matches before a final newline.
struct FormatCheck(Regex);

impl RewardObjective for FormatCheck {
    fn score_group(&self, request: &ScoreRequest<'_>) -> crpo_sdk::Result<Vec<Score>> {
        crpo_sdk::score_each(request, |c| {
            Score::new(if self.0.is_match(c) { 1.0 } else { 0.0 })
        })
    }
}

/// The benchmark's question, with dataset columns for the Python function's keywords.
fn example() -> Example {
    let mut example = support::analgesic_example();
    example.metadata.insert("answer".into(), "Acetaminophen".into());
    example.metadata.insert("meta_info".into(), "step2&3".into());
    example
}

/// Nanoseconds per completion over COMPLETIONS completions in groups of GROUP.
fn per_completion_ns(objective: &dyn Fn(&ScoreRequest<'_>) -> usize) -> f64 {
    let example = example();
    let texts: Vec<String> = (0..GROUP)
        .map(|i| {
            let think = "NSAIDs raise the bleeding risk with warfarin; acetaminophen does not. ".repeat(3);
            let answer = format!("<answer>\\boxed{{{}}}</answer>", ["A", "B", "C"][i % 3]);
            // Every other completion breaks the format with a newline between the sections.
            let separator = if i % 2 == 0 { "" } else { "\n" };
            format!("<think>Step {i}: {think}</think>{separator}{answer}")
        })
        .collect();
    let completions: Vec<&str> = texts.iter().map(String::as_str).collect();
    // About the completions' length in tokens.
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| (0..t.len() as u32 / 4).collect()).collect();
    let request = ScoreRequest::new(&example, "", &completions).with_completion_ids(&ids);
    for _ in 0..20 {
        black_box(objective(&request));
    }
    let groups = COMPLETIONS / GROUP;
    let start = Instant::now();
    for _ in 0..groups {
        black_box(objective(black_box(&request)));
    }
    start.elapsed().as_nanos() as f64 / (groups * GROUP) as f64
}

fn main() {
    let plugins = support::python_plugin_dir();
    let registry = PluginRegistry::load(&[plugins.path().to_path_buf()]).expect("the python plugin loads");
    let file = plugins.path().join("rewards.py");
    std::fs::write(&file, REWARDS).unwrap();
    let python = |function: &str| {
        let spec = ObjectiveSpec {
            name: Some(function.into()),
            plugin: "python".into(),
            weight: None,
            options: serde_json::json!({"file": file, "function": function}),
            ..ObjectiveSpec::default()
        };
        ConfiguredObjective::create(&registry, &spec).unwrap()
    };
    let (format_py, constant_py) = (python("format_reward"), python("constant_reward"));
    let compiled = FormatCheck(Regex::new(r"^<think>.*?</think><answer>.*?</answer>\n?$").unwrap());

    // Both give the same scores.
    let example = example();
    let texts = [
        "<think>a</think><answer>b</answer>",
        "<think>a</think>\n<answer>b</answer>",
        "x",
    ];
    let request = ScoreRequest::new(&example, "", &texts);
    let values = |scores: Vec<Score>| scores.into_iter().map(|s| s.value).collect::<Vec<_>>();
    assert_eq!(
        values(format_py.score_group(&request).unwrap()),
        values(compiled.score_group(&request).unwrap())
    );

    // Alternating rounds, medians.
    let (mut rust_runs, mut python_runs, mut constant_runs, mut differences) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let rust_ns = per_completion_ns(&|r| compiled.score_group(r).unwrap().len());
        let python_ns = per_completion_ns(&|r| format_py.score_group(r).unwrap().len());
        constant_runs.push(per_completion_ns(&|r| constant_py.score_group(r).unwrap().len()));
        rust_runs.push(rust_ns);
        python_runs.push(python_ns);
        differences.push(python_ns - rust_ns);
    }
    let (rust_ns, python_ns, constant_ns, overhead_ns) = (
        support::median(rust_runs),
        support::median(python_runs),
        support::median(constant_runs),
        support::median(differences),
    );
    println!(
        "format reward, {COMPLETIONS} completions in groups of {GROUP} (with token ids), median of {ROUNDS} alternating rounds"
    );
    println!("{:<34} {:>14}", "objective", "ns/completion");
    println!("{:<34} {:>14.0}", "compiled (Rust regex)", rust_ns);
    println!("{:<34} {:>14.0}", "python format_reward (plugin)", python_ns);
    println!("{:<34} {:>14.0}", "python constant_reward (plugin)", constant_ns);
    println!("python overhead: {overhead_ns:.0} ns per completion over the compiled check");
    println!(
        "{}",
        serde_json::json!({"group": GROUP, "completions": COMPLETIONS,
            "compiled_ns_per_completion": rust_ns, "python_ns_per_completion": python_ns,
            "python_constant_ns_per_completion": constant_ns, "overhead_ns_per_completion": overhead_ns})
    );
}
