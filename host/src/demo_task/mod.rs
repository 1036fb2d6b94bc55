//! The bundled demo task: synthetic clinical multiple-choice questions in MedQA format on
//! which a small model can learn, in minutes on a CPU, what CRPO changes and GRPO does not.
//!
//! - Twelve conditions in three groups by presenting complaint ([`knowledge`]); a question
//!   shows a vignette's findings and lists its group's diagnoses (or tests, or treatments) as
//!   options in a fixed order, so the findings decide the answer and its letter is learnable.
//! - An imperfect teacher: for the hard conditions (asked about in `hard_share` of the
//!   questions), a share of the reference completions
//!   (`wrong_share`) names the diagnosis the condition is confused with, consistently, so the
//!   cold start is right about half the time and RL has something to fix.
//! - Reasoning styles dealt independently of correctness ([`Style`]), so the cold start is
//!   imperfect on clinical_reasoning, faithfulness and comprehensiveness and each objective
//!   has variance to learn from.
//!
//! `meta_info` records `{"difficulty": "hard"|"easy", "kind": "diagnosis"|"test"|"treatment"}`;
//! `reference_style` and `reference_correct` describe the reference completion.
//! `data/demo/*.jsonl` in the repository are this module's output for [`DemoTask::default`]
//! (a test checks it), and `host/tests/demo_task.rs` checks every reference scores on the
//! clinical objectives as its style says.

pub mod knowledge;
mod style;

pub use knowledge::{Ask, Condition, Group, GROUPS};
pub use style::{Style, StyleWeights};

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// The knobs of the demo task (`crpo-host demo-data` takes each as an option).
#[derive(Debug, Clone, PartialEq)]
pub struct DemoTask {
    /// Seeds every draw: the same seed gives the same files.
    pub seed: u64,
    /// Training questions.
    pub train: usize,
    /// Held-out questions.
    pub eval: usize,
    /// Share of the questions that are about a hard condition.
    pub hard_share: f64,
    /// Share of a hard condition's reference completions that name its confusable diagnosis.
    pub wrong_share: f64,
    /// How often the reference completions use each reasoning style.
    pub styles: StyleWeights,
    /// What the questions ask for.
    pub kinds: Vec<Ask>,
}

impl Default for DemoTask {
    fn default() -> Self {
        DemoTask {
            seed: 0,
            train: 512,
            eval: 96,
            hard_share: 0.55,
            wrong_share: 0.7,
            styles: StyleWeights::default(),
            kinds: Ask::ALL.to_vec(),
        }
    }
}

/// The two files of the task.
#[derive(Debug)]
pub struct DemoFiles {
    pub train: Vec<Value>,
    pub eval: Vec<Value>,
}

/// The most questions a split of the demo task may have (about 1 GB of records).
pub const MAX_QUESTIONS: usize = 1_000_000;
impl DemoTask {
    /// Refuses knobs that cannot make a task.
    pub fn validate(&self) -> Result<(), String> {
        if self.train == 0 || self.eval == 0 {
            return Err("the demo task needs at least one training and one held-out question".into());
        }
        // Each question is about 1 KB in memory and on disk: beyond this the allocation failed
        // with a panic trace or an abort.
        for (flag, count) in [("--train-questions", self.train), ("--eval-questions", self.eval)] {
            if count > MAX_QUESTIONS {
                return Err(format!(
                    "{flag} {count} is more questions than the demo task writes (at most {MAX_QUESTIONS})"
                ));
            }
        }
        for (what, share) in [("hard", self.hard_share), ("wrong", self.wrong_share)] {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("{what} share {share} is not in [0, 1]"));
            }
        }
        if self.kinds.is_empty() {
            return Err("the demo task needs at least one question kind".into());
        }
        self.styles.validate()
    }

    /// The training and held-out records: independent seeded streams of one generator.
    pub fn generate(&self) -> Result<DemoFiles, String> {
        self.validate()?;
        // Exactly `hard_share` of each split is hard, so the cold start's accuracy does not
        // drift with how many hard questions a seed happens to draw.
        let split = |stream: u64, count: usize| {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(stream);
            let hard = (count as f64 * self.hard_share).round() as usize;
            let mut kinds: Vec<bool> = (0..count).map(|i| i < hard).collect();
            kinds.shuffle(&mut rng);
            kinds
                .into_iter()
                .map(|hard| self.record(&mut rng, hard))
                .collect()
        };
        let train: Vec<Value> = split(0, self.train);
        let mut eval: Vec<Value> = split(1, self.eval);
        // A held-out question that is also a training question measures memory: each such
        // one is drawn again (as hard as it was) from a stream of its own, so that the other
        // held-out questions stay what the seed gave.
        let asked: std::collections::HashSet<String> =
            train.iter().map(|r| r["question"].to_string()).collect();
        let mut spare = ChaCha8Rng::seed_from_u64(self.seed);
        spare.set_stream(2);
        for record in &mut eval {
            let hard = record["meta_info"]["difficulty"] == "hard";
            for _ in 0..1000 {
                if !asked.contains(&record["question"].to_string()) {
                    break;
                }
                *record = self.record(&mut spare, hard);
            }
        }
        Ok(DemoFiles { train, eval })
    }

    /// One MedQA-format record with its reference completion.
    fn record(&self, rng: &mut ChaCha8Rng, hard: bool) -> Value {
        let (group, gold) = *conditions(hard)
            .choose(rng)
            .expect("each kind of condition exists");
        let ask = *self.kinds.choose(rng).expect("validated: kinds is not empty");
        let confusion = group.confusions.iter().find(|(hard, _)| *hard == gold);
        let chosen = match confusion {
            Some(&(_, confused)) if rng.random_bool(self.wrong_share) => confused,
            _ => gold,
        };
        // The other option a hedging reference wavers towards: the gold when the reference is
        // wrong, the confusable of a hard condition, else any other option.
        let runner_up = if chosen != gold {
            gold
        } else if let Some(&(_, confused)) = confusion {
            confused
        } else {
            let others: Vec<usize> = (0..group.conditions.len()).filter(|&i| i != gold).collect();
            *others.choose(rng).expect("a group has several conditions")
        };
        let style = self.styles.draw(rng);
        let condition = &group.conditions[gold];
        let question = format!(
            "A {} {} with {}: {}. {}",
            patient(rng),
            SETTINGS.choose(rng).expect("settings are listed"),
            group.complaint,
            condition.findings,
            ask.question()
        );
        let options: serde_json::Map<String, Value> = group
            .conditions
            .iter()
            .enumerate()
            .map(|(i, c)| (letter(i).to_string(), json!(ask.fact(c))))
            .collect();
        let reference = style.reference(group, ask, gold, chosen, runner_up);
        json!({
            "question": question,
            "answer": ask.fact(condition),
            "options": options,
            "answer_idx": letter(gold),
            "meta_info": {
                "difficulty": if confusion.is_some() { "hard" } else { "easy" },
                "kind": ask.label(),
            },
            "reference_style": style.label(),
            "reference_correct": chosen == gold,
            "reference_completion": reference,
        })
    }
}

/// Every hard (or easy) condition as (group, index in the group).
fn conditions(hard: bool) -> Vec<(&'static Group, usize)> {
    GROUPS
        .iter()
        .flat_map(|group| (0..group.conditions.len()).map(move |i| (group, i)))
        .filter(|(group, i)| group.confusions.iter().any(|(h, _)| h == i) == hard)
        .collect()
}

/// The option letter of position `index`.
pub fn letter(index: usize) -> char {
    (b'A' + index as u8) as char
}

const SETTINGS: [&str; 4] = [
    "comes to the emergency department",
    "is seen in the clinic",
    "presents to the physician",
    "is brought to the hospital",
];

/// "54-year-old woman", "12-year-old boy", …
fn patient(rng: &mut ChaCha8Rng) -> String {
    let age: u32 = rng.random_range(8..85);
    let female = rng.random_bool(0.5);
    let person = match (age < 18, female) {
        (true, true) => "girl",
        (true, false) => "boy",
        (false, true) => "woman",
        (false, false) => "man",
    };
    format!("{age}-year-old {person}")
}

/// The records as JSONL text.
pub fn to_jsonl(records: &[Value]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

/// The shipped files' names, for [`DemoFiles`]' two splits.
pub const TRAIN_FILE: &str = "train.jsonl";
pub const EVAL_FILE: &str = "eval.jsonl";

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the MedQA reader sees it (the fields the test needs).
    fn example_of(map: &serde_json::Map<String, Value>) -> crpo_sdk::Example {
        crpo_sdk::Example {
            answer: map["answer_idx"].as_str().map(String::from),
            options: map["options"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| crpo_sdk::AnswerOption {
                    key: k.clone(),
                    text: v.as_str().unwrap().to_string(),
                })
                .collect(),
            reference_completion: map["reference_completion"].as_str().map(String::from),
            ..crpo_sdk::Example::default()
        }
    }

    #[test]
    fn a_count_no_machine_could_hold_is_refused_by_flag() {
        let huge = DemoTask {
            train: usize::MAX,
            ..DemoTask::default()
        };
        let error = huge.validate().unwrap_err();
        assert!(
            error.contains("--train-questions 18446744073709551615"),
            "{error}"
        );
    }

    #[test]
    fn records_are_valid_medqa_with_the_gold_among_the_options() {
        let files = DemoTask {
            seed: 3,
            train: 60,
            eval: 10,
            ..DemoTask::default()
        }
        .generate()
        .unwrap();
        for record in files.train.iter().chain(&files.eval) {
            let map = record.as_object().unwrap();
            let example = example_of(map);
            let gold = example.answer.clone().unwrap();
            assert_eq!(example.option_text(&gold), record["answer"].as_str());
            let reference = example.reference_completion.unwrap();
            let boxed = reference
                .split("\\boxed{")
                .nth(1)
                .unwrap()
                .chars()
                .next()
                .unwrap();
            assert_eq!(
                boxed.to_string() == gold,
                record["reference_correct"] == true,
                "{reference}"
            );
            assert_eq!(example.options.len(), 4);
        }
    }

    #[test]
    fn letters_are_fixed_per_condition_and_only_hard_conditions_are_taught_wrong() {
        let files = DemoTask::default().generate().unwrap();
        let mut wrong_hard = 0;
        let mut hard = 0;
        for record in &files.train {
            let hard_record = record["meta_info"]["difficulty"] == "hard";
            hard += usize::from(hard_record);
            if record["reference_correct"] == false {
                assert!(hard_record, "an easy condition taught wrong: {record}");
                wrong_hard += 1;
            }
            let group = GROUPS
                .iter()
                .find(|g| record["question"].as_str().unwrap().contains(g.complaint))
                .unwrap();
            let gold = record["answer_idx"].as_str().unwrap();
            let position = (gold.as_bytes()[0] - b'A') as usize;
            assert!(record["question"]
                .as_str()
                .unwrap()
                .contains(group.conditions[position].findings));
        }
        let share = wrong_hard as f64 / hard as f64;
        assert!((0.6..0.8).contains(&share), "wrong share {share}");
        assert_eq!(
            hard,
            (files.train.len() as f64 * 0.55).round() as usize,
            "exactly the hard share"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_files_and_another_seed_others() {
        let task = DemoTask::default();
        let (a, b) = (task.generate().unwrap(), task.generate().unwrap());
        assert_eq!(to_jsonl(&a.train), to_jsonl(&b.train));
        let other = DemoTask { seed: 1, ..task }.generate().unwrap();
        assert_ne!(to_jsonl(&a.train), to_jsonl(&other.train));
        assert_ne!(to_jsonl(&a.train[..10]), to_jsonl(&a.eval[..10]));
    }

    #[test]
    fn no_held_out_question_is_a_training_question() {
        for seed in 0..4 {
            let files = DemoTask {
                seed,
                ..DemoTask::default()
            }
            .generate()
            .unwrap();
            let asked: std::collections::HashSet<String> =
                files.train.iter().map(|r| r["question"].to_string()).collect();
            assert!(
                files
                    .eval
                    .iter()
                    .all(|r| !asked.contains(&r["question"].to_string())),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn bad_knobs_are_refused() {
        let bad = DemoTask {
            wrong_share: 1.5,
            ..DemoTask::default()
        };
        assert!(bad.generate().unwrap_err().contains("1.5"));
        let none = DemoTask {
            kinds: Vec::new(),
            ..DemoTask::default()
        };
        assert!(none.generate().is_err());
    }

    #[test]
    fn the_shipped_files_are_this_generator_s_output() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/demo");
        let files = DemoTask::default().generate().unwrap();
        for (name, records) in [(TRAIN_FILE, &files.train), (EVAL_FILE, &files.eval)] {
            let shipped = std::fs::read_to_string(dir.join(name)).unwrap();
            assert_eq!(shipped, to_jsonl(records), "data/demo/{name} is stale");
        }
    }
}
