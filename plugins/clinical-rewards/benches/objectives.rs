//! Cost per completion of each of the paper's four objectives (and the length penalty's
//! neighbour, accuracy), scored as training scores them: a group of completions of one
//! five-option question, each with a System 1 / System 2 reasoning of a dozen clauses.
//! Run: `cargo bench -p crpo-plugins-rewards --bench objectives`

use crpo_plugins_rewards::rule::RuleObjective;
use crpo_plugins_rewards::{accuracy, clinical_reasoning, comprehensiveness, consistency, faithfulness};
use crpo_sdk::{AnswerOption, Example, Prompt};
use std::hint::black_box;
use std::time::Instant;

const GROUP: usize = 64;
const GROUPS: usize = 300;
const ROUNDS: usize = 5;

fn example() -> Example {
    Example {
        id: "bench".into(),
        prompt: Prompt::Text(
            "A 70-year-old man on warfarin has knee pain. Which analgesic is safest?".into(),
        ),
        answer: Some("B".into()),
        options: [
            ("A", "Ibuprofen"),
            ("B", "Acetaminophen"),
            ("C", "Naproxen"),
            ("D", "Ketorolac"),
            ("E", "Aspirin"),
        ]
        .into_iter()
        .map(|(key, text)| AnswerOption {
            key: key.into(),
            text: text.into(),
        })
        .collect(),
        ..Example::default()
    }
}

fn completion(i: usize) -> String {
    let answer = ["A", "B", "C"][i % 3];
    format!(
        "<dx>System 1: knee pain in an elderly man on warfarin; Ibuprofen is the reflex choice. \
         System 2: NSAIDs such as Naproxen and Ketorolac raise bleeding risk with warfarin. \
         Aspirin adds antiplatelet effect; option E is unsafe. Acetaminophen has no antiplatelet \
         effect; it is likely the safest. Step {i}: check the dose. Renal function is normal. \
         The INR is stable; choice B fits best. Ibuprofen (A) is excluded.</dx>\
         <conclusion>\\boxed{{{answer}}}</conclusion>"
    )
}

/// Median nanoseconds per completion over ROUNDS rounds of GROUPS groups.
fn per_completion_ns(objective: &RuleObjective, example: &Example, completions: &[String]) -> f64 {
    let rounds = (0..ROUNDS).map(|_| {
        let start = Instant::now();
        for _ in 0..GROUPS {
            for completion in completions {
                black_box((objective.rule)(black_box(example), black_box(completion)).unwrap());
            }
        }
        start.elapsed().as_nanos() as f64 / (GROUPS * completions.len()) as f64
    });
    let mut rounds: Vec<f64> = rounds.collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn main() {
    let example = example();
    let completions: Vec<String> = (0..GROUP).map(completion).collect();
    let objectives = [
        &accuracy::ACCURACY,
        &clinical_reasoning::CLINICAL_REASONING,
        &faithfulness::FAITHFULNESS,
        &comprehensiveness::COMPREHENSIVENESS,
        &consistency::CONSISTENCY,
    ];
    println!(
        "built-in objectives, groups of {GROUP} completions, {GROUPS} groups, median of {ROUNDS} rounds"
    );
    println!("{:<20} {:>14}", "objective", "ns/completion");
    let mut figures = serde_json::Map::new();
    for objective in objectives {
        let ns = per_completion_ns(objective, &example, &completions);
        println!("{:<20} {:>14.0}", objective.name, ns);
        figures.insert(objective.name.into(), ns.into());
    }
    println!("{}", serde_json::Value::Object(figures));
}
