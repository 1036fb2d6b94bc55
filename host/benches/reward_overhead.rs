//! Per-completion overhead of a reward objective loaded from a plugin library versus the
//! same objective compiled in, and of running it in a worker process (`isolation =
//! "process"`), for groups of 64 completions.
//! Run: `cargo bench -p crpo-host --bench reward_overhead`

#[path = "../tests/support/mod.rs"]
mod support;

use crpo_host::plugins::isolation::{Execution, Isolation};
use crpo_host::plugins::{ConfiguredObjective, ObjectiveSpec, PluginRegistry};
use crpo_sdk::{RewardObjective, RewardPlugin, ScoreRequest};
use std::hint::black_box;
use std::time::Instant;

const GROUP: usize = 64;
const GROUPS: usize = 2_000;
const ROUNDS: usize = 7;

/// Nanoseconds per completion over GROUPS groups of GROUP completions.
fn per_completion_ns(score: impl Fn(&ScoreRequest<'_>) -> usize) -> f64 {
    let example = support::analgesic_example();
    let texts: Vec<String> = (0..GROUP)
        .map(|i| format!("<think>Step {i}: NSAIDs raise bleeding risk with warfarin.</think><answer>\\boxed{{{}}}</answer>", ["A", "B", "C"][i % 3]))
        .collect();
    let completions: Vec<&str> = texts.iter().map(String::as_str).collect();
    let request = ScoreRequest::new(&example, "", &completions);
    for _ in 0..50 {
        black_box(score(&request));
    }
    let start = Instant::now();
    for _ in 0..GROUPS {
        black_box(score(black_box(&request)));
    }
    start.elapsed().as_nanos() as f64 / (GROUPS * GROUP) as f64
}

fn main() {
    let dir = support::plugin_dir(&["contraindication_safety"]);
    let registry = PluginRegistry::load(&[dir.path().to_path_buf()]).expect("plugin loads");
    let spec = ObjectiveSpec {
        name: None,
        plugin: "contraindication_safety".into(),
        weight: None,
        options: serde_json::Value::Null,
        ..ObjectiveSpec::default()
    };
    let dynamic = ConfiguredObjective::create(&registry, &spec).unwrap();
    let isolated_spec = ObjectiveSpec {
        execution: Execution {
            isolation: Isolation::Process,
            ..Execution::default()
        },
        ..spec.clone()
    };
    let isolated = ConfiguredObjective::create(&registry, &isolated_spec).unwrap();
    let builtin: Box<dyn RewardObjective> = contraindication_safety::ContraindicationSafetyPlugin
        .create(&serde_json::Value::Null)
        .unwrap();

    // Alternating rounds, medians: one pass of each drifts by more than the overhead itself.
    let (mut builtin_runs, mut dynamic_runs, mut differences) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let builtin_ns = per_completion_ns(|r| builtin.score_group(r).unwrap().len());
        let dynamic_ns = per_completion_ns(|r| dynamic.score_group(r).unwrap().len());
        builtin_runs.push(builtin_ns);
        dynamic_runs.push(dynamic_ns);
        differences.push(dynamic_ns - builtin_ns);
    }
    let (builtin_ns, dynamic_ns, overhead_ns) = (
        support::median(builtin_runs),
        support::median(dynamic_runs),
        support::median(differences),
    );
    // The same objective in a worker process: the request and scores cross a pipe as JSON.
    let isolated_runs: Vec<f64> = (0..ROUNDS)
        .map(|_| per_completion_ns(|r| isolated.score_group(r).unwrap().len()))
        .collect();
    let isolated_ns = support::median(isolated_runs);
    println!(
        "reward objective: contraindication_safety, groups of {GROUP} completions, {GROUPS} groups, median of {ROUNDS} alternating rounds"
    );
    println!("{:<10} {:>16}", "origin", "ns/completion");
    println!("{:<10} {:>16.1}", "builtin", builtin_ns);
    println!("{:<10} {:>16.1}", "dynamic", dynamic_ns);
    println!("{:<10} {:>16.1}", "isolated", isolated_ns);
    println!("dynamic overhead: {overhead_ns:.1} ns per completion (median of the rounds' differences)");
    println!(
        "isolation overhead (isolation = \"process\"): {:.1} ns per completion over the loaded library",
        isolated_ns - dynamic_ns
    );
    println!(
        "{}",
        serde_json::json!({"group": GROUP, "builtin_ns_per_completion": builtin_ns,
            "dynamic_ns_per_completion": dynamic_ns, "overhead_ns_per_completion": overhead_ns,
            "isolated_ns_per_completion": isolated_ns})
    );
}
