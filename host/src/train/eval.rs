//! Evaluation: generate answers to held-out questions (greedy, or k samples each and their
//! majority vote), with the prompt format the run trained with, and report the share of
//! questions answered right, every objective's mean, and both per `meta_info` group. Each
//! question's completions, scores and chosen answers can be kept as JSONL.

use super::config::{EvalSection, RunConfig};
use super::data::PromptFormat;
use super::reward::RunReward;
use super::rollouts::{sample_groups, Group};
use crate::distributed::World;
use crate::plugins::PluginRegistry;
use crate::rollout::sampling::SamplingConfig;
use crate::rollout::Policy;
use anyhow::Context;
use crpo_sdk::Example;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize)]
pub struct EvalReport {
    /// How the table names the model (by default the end of its path).
    pub label: String,
    pub dataset: String,
    pub model: String,
    pub questions: usize,
    /// Completions per question; with more than one, the answer is their majority vote.
    pub samples: usize,
    /// 0 = greedy.
    pub temperature: f64,
    /// Share of questions whose (majority-voted) answer is the gold option.
    pub accuracy: f64,
    /// Each objective's unweighted mean over every completion.
    pub objectives: BTreeMap<String, f64>,
    /// The weighted total's mean.
    pub reward: f64,
    /// Questions and accuracy per `meta_info` group (`step1`, or `difficulty=hard` for an
    /// object's fields).
    pub by_meta: BTreeMap<String, GroupAccuracy>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GroupAccuracy {
    pub questions: usize,
    pub correct: usize,
    pub accuracy: f64,
}

/// The most frequent answer; ties go to the one given first.
pub fn majority_vote(answers: &[Option<String>]) -> Option<&str> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for answer in answers.iter().flatten() {
        match counts.iter_mut().find(|(a, _)| a == answer) {
            Some((_, n)) => *n += 1,
            None => counts.push((answer, 1)),
        }
    }
    let best = counts.iter().map(|(_, n)| *n).max()?;
    counts.into_iter().find(|(_, n)| *n == best).map(|(a, _)| a)
}

/// The groups an example counts in: its `meta_info` string, or each scalar field of a
/// `meta_info` object as `field=value`.
pub fn meta_groups(example: &Example) -> Vec<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    };
    match example.metadata.get("meta_info") {
        Some(Value::Object(fields)) => fields
            .iter()
            .filter_map(|(k, v)| scalar(v).map(|v| format!("{k}={v}")))
            .collect(),
        Some(other) => scalar(other).into_iter().collect(),
        None => Vec::new(),
    }
}

/// Checks the evaluation settings: a greedy decoder gives k identical samples.
/// The most completions one evaluation batch generates at once (questions × samples): a batch
/// of more questions is split, and more samples of one question are refused — each row holds
/// its own key/value cache, and a mistyped `--samples 1000000` ran the machine out of memory.
pub const MAX_EVAL_ROWS: usize = 1024;

pub fn check_settings(settings: &EvalSection) -> anyhow::Result<()> {
    if settings.samples == 0 {
        anyhow::bail!("eval needs at least 1 sample per question");
    }
    if settings.samples > MAX_EVAL_ROWS {
        anyhow::bail!(
            "eval.num_generations_eval (or --samples) is {}: at most {MAX_EVAL_ROWS} samples per question are generated together",
            settings.samples
        );
    }
    crate::rollout::sampling::check_temperature(settings.temperature, "eval.temperature (or --temperature)")?;
    if settings.samples > 1 && settings.temperature <= 0.0 {
        anyhow::bail!(
            "{} samples per question need a temperature > 0 (greedy samples would all be the same): set eval.temperature or pass --temperature",
            settings.samples
        );
    }
    Ok(())
}

/// Evaluates `policy` on `examples` with `settings` (the prompt as the run's config makes it);
/// `completions` receives one JSON record per question when given. The answer of a completion
/// is the one the reward's accuracy objective read ([`RunReward::answers_from`]), so any
/// accuracy objective — multiple choice or free text — is evaluated the same way.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    registry: &PluginRegistry,
    policy: &Policy,
    reward: &RunReward,
    config: &RunConfig,
    settings: &EvalSection,
    examples: &[Example],
    dataset: &str,
    completions: Option<&mut dyn FnMut(Value) -> anyhow::Result<()>>,
) -> anyhow::Result<EvalReport> {
    let format = PromptFormat::from_config(config, registry)?;
    evaluate_with(
        policy,
        reward,
        &format,
        config,
        settings,
        examples,
        dataset,
        completions,
        None,
    )
}

/// [`evaluate`] with the prompt format already made (the trainer's, during training). Across
/// the ranks of a distributed run (`world`) each rank samples every `size`-th batch of
/// questions and the outcomes are gathered: every rank returns the report one process would
/// give, to the bit (each batch samples with its own seed, and the sums run in question order).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_with(
    policy: &Policy,
    reward: &RunReward,
    format: &PromptFormat,
    config: &RunConfig,
    settings: &EvalSection,
    examples: &[Example],
    dataset: &str,
    mut completions: Option<&mut dyn FnMut(Value) -> anyhow::Result<()>>,
    world: Option<&World>,
) -> anyhow::Result<EvalReport> {
    check_settings(settings)?;
    if examples.is_empty() {
        anyhow::bail!("{dataset}: there are no questions to evaluate (a held-out set comes from data.eval_path, or data.eval_fraction of data.path)");
    }
    policy.check_positions(
        ("algorithm.max_prompt_length", config.max_prompt_length()),
        ("eval.max_completion_length", settings.max_completion_length),
    )?;
    let examples = &format.admit(&policy.tokenizer, examples.to_vec(), dataset)?;
    let count = if settings.limit > 0 {
        settings.limit.min(examples.len())
    } else {
        examples.len()
    };
    let names = reward.names();
    let keep_records = completions.is_some();
    let questions = Questions {
        policy,
        reward,
        format,
        config,
        settings,
        examples,
    };
    let mine = questions.sample_outcomes(count, keep_records, world);
    let mut outcomes = match world {
        Some(world) => gather_outcomes(world, mine)?,
        None => mine?,
    };
    outcomes.sort_by_key(|o| o.example);
    if !outcomes.iter().any(|o| o.answered) {
        warn_of_no_answers(reward, dataset);
    }

    let (mut sums, mut reward_sum, mut correct, mut scored) =
        (vec![0.0f64; names.len()], 0.0f64, 0usize, 0usize);
    let mut by_meta: BTreeMap<String, GroupAccuracy> = BTreeMap::new();
    for outcome in outcomes {
        for row in &outcome.values {
            for (sum, value) in sums.iter_mut().zip(row) {
                *sum += *value as f64;
            }
            scored += 1;
        }
        reward_sum += outcome.totals.iter().map(|&t| t as f64).sum::<f64>();
        correct += usize::from(outcome.right);
        for key in meta_groups(&examples[outcome.example]) {
            let entry = by_meta.entry(key).or_default();
            entry.questions += 1;
            entry.correct += usize::from(outcome.right);
        }
        if let (Some(write), Some(record)) = (completions.as_mut(), outcome.record) {
            write(record)?;
        }
    }
    for group in by_meta.values_mut() {
        group.accuracy = group.correct as f64 / group.questions as f64;
    }
    let per_sample = scored.max(1) as f64;
    Ok(EvalReport {
        label: short(&policy.source.display().to_string()),
        dataset: dataset.to_string(),
        model: policy.source.display().to_string(),
        questions: count,
        samples: settings.samples,
        temperature: settings.temperature,
        accuracy: correct as f64 / count as f64,
        objectives: names
            .into_iter()
            .zip(sums.iter().map(|s| s / per_sample))
            .collect(),
        reward: reward_sum / per_sample,
        by_meta,
    })
}

/// No completion of any question stated an answer the share right could count: said, as a
/// share of 0 would read as a model that is always wrong.
fn warn_of_no_answers(reward: &RunReward, dataset: &str) {
    let Some(index) = reward.answers_from() else {
        return;
    };
    tracing::warn!(
        "{dataset}: objective `{}` stated no answer for any question, so acc (share right) counts none right. If the model did answer, this objective does not report answers: evaluation votes on those of the objective named `accuracy` (else the first); a built-in accuracy or exact_match objective reports them, a Python reward does not",
        reward.names()[index]
    );
}

/// One question's result: all the report needs of it, so that ranks can send it.
#[derive(Serialize, Deserialize)]
struct Outcome {
    /// Its index among the admitted examples.
    example: usize,
    /// Each completion's objective values, and its weighted total.
    values: Vec<Vec<f32>>,
    totals: Vec<f32>,
    right: bool,
    /// Whether any of its completions stated an answer (the share right means nothing when
    /// no question's did).
    answered: bool,
    /// The `--output-completions` record, when one is kept.
    record: Option<Value>,
}

/// What an evaluation samples and scores: the questions, and the policy, objectives, prompt
/// format and settings it asks them with.
struct Questions<'a> {
    policy: &'a Policy,
    reward: &'a RunReward,
    format: &'a PromptFormat,
    config: &'a RunConfig,
    settings: &'a EvalSection,
    examples: &'a [Example],
}

impl Questions<'_> {
    /// Samples and scores this rank's batches of the first `count` questions: all of them alone,
    /// batch `n` on rank `n % size` in a distributed run.
    fn sample_outcomes(
        &self,
        count: usize,
        keep_records: bool,
        world: Option<&World>,
    ) -> anyhow::Result<Vec<Outcome>> {
        let (settings, examples) = (self.settings, self.examples);
        let names = self.reward.names();
        let indices: Vec<usize> = (0..count).collect();
        // eval.batch_size questions, fewer when their samples would be over MAX_EVAL_ROWS rows.
        let per_batch = settings.batch_size.min(MAX_EVAL_ROWS / settings.samples).max(1);
        let batches: Vec<(usize, &[usize])> = indices
            .chunks(per_batch)
            .enumerate()
            .filter(|(number, _)| world.is_none_or(|w| number % w.size == w.rank))
            .collect();
        let total = batches.iter().map(|(_, batch)| batch.len() as u64).sum();
        let progress = super::progress::bar(total, 0, "eval", "questions");
        let mut outcomes = Vec::new();
        for (_, batch) in batches {
            let sampling = SamplingConfig {
                max_new_tokens: settings.max_completion_length,
                min_new_tokens: 0,
                temperature: settings.temperature,
                top_p: 1.0,
                top_k: 0,
                greedy: settings.temperature <= 0.0,
                // Question q's k-th sample draws from stream q × samples + k, whatever the
                // batches: eval.batch_size (and the ranks' shares) leave the samples as they are.
                seed: self.config.run.seed,
                first_stream: (batch[0] * settings.samples) as u64,
                row_budgets: Vec::new(),
            };
            let (groups, _) = sample_groups(
                self.policy,
                self.reward,
                examples,
                batch,
                self.format,
                settings.samples,
                &sampling,
            )?;
            for group in groups {
                let example = &examples[group.example];
                let vote = majority_vote(&group.scores.answers);
                let right = is_gold(example, vote);
                let record = keep_records.then(|| question_record(example, &group, &names, vote, right));
                outcomes.push(Outcome {
                    example: group.example,
                    values: group.scores.values,
                    totals: group.scores.totals,
                    right,
                    answered: vote.is_some(),
                    record,
                });
            }
            progress.inc(batch.len() as u64);
        }
        progress.finish_and_clear();
        Ok(outcomes)
    }
}

/// Every rank's outcomes, on every rank (after every rank has sampled its share, or the
/// first failed rank's error).
fn gather_outcomes(world: &World, mine: anyhow::Result<Vec<Outcome>>) -> anyhow::Result<Vec<Outcome>> {
    let mine = world.agree("evaluating the held-out set", mine)?;
    let bytes = serde_json::to_vec(&mine)?;
    let mut all = Vec::new();
    for (rank, theirs) in world
        .all_gather("gathering the evaluation", &bytes)?
        .iter()
        .enumerate()
    {
        let outcomes: Vec<Outcome> = serde_json::from_slice(theirs)
            .with_context(|| format!("rank {rank}'s evaluation outcomes do not parse"))?;
        all.extend(outcomes);
    }
    Ok(all)
}

fn is_gold(example: &Example, answer: Option<&str>) -> bool {
    answer.is_some() && answer == example.answer.as_deref()
}

/// One question's record for `--output-completions`.
fn question_record(
    example: &Example,
    group: &Group,
    names: &[String],
    vote: Option<&str>,
    correct: bool,
) -> Value {
    let completions: Vec<Value> = group
        .texts
        .iter()
        .zip(&group.scores.values)
        .zip(&group.scores.answers)
        .map(|((text, row), answer)| {
            let scores: serde_json::Map<String, Value> = names
                .iter()
                .zip(row)
                .map(|(n, v)| (n.clone(), json!(v)))
                .collect();
            json!({"completion": text, "answer": answer, "scores": scores})
        })
        .collect();
    json!({
        "id": example.id,
        "gold": example.answer,
        "meta_info": example.metadata.get("meta_info"),
        "prompt": group.prompt_text,
        "answer": vote,
        "correct": correct,
        "completions": completions,
    })
}

/// How a report's decoding reads in a table: `greedy`, `T=1, k=1` or `T=1, k=8 (vote)`.
pub fn decoding(report: &EvalReport) -> String {
    if report.temperature <= 0.0 {
        "greedy".into()
    } else if report.samples == 1 {
        // One sample: nothing is voted on.
        format!("T={}, k=1", report.temperature)
    } else {
        format!("T={}, k={} (vote)", report.temperature, report.samples)
    }
}

/// A table: one row per report with the share of questions right and each objective's mean.
pub fn table(reports: &[EvalReport]) -> String {
    let objectives: Vec<&String> = reports
        .first()
        .map(|r| r.objectives.keys().collect())
        .unwrap_or_default();
    let mut header = vec![
        "model / dataset".to_string(),
        "decoding".into(),
        "questions".into(),
        "acc (share right)".into(),
        "reward (weighted)".into(),
    ];
    header.extend(objectives.iter().map(|name| format!("{name} obj (mean)")));
    let rows = reports.iter().map(|report| {
        let mut row = vec![
            format!("{} / {}", report.label, report.dataset),
            decoding(report),
            report.questions.to_string(),
            format!("{:.3}", report.accuracy),
            format!("{:.3}", report.reward),
        ];
        row.extend(
            objectives
                .iter()
                .map(|name| format!("{:.3}", report.objectives.get(*name).copied().unwrap_or(f64::NAN))),
        );
        row
    });
    crate::text_table::text_table(header, rows)
}

/// The last two components of a path, enough to tell models apart in a table.
fn short(path: &str) -> String {
    let parts: Vec<&str> = path.trim_end_matches('/').rsplit('/').take(2).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_vote_takes_the_most_frequent_then_the_first() {
        let answers = |a: &[Option<&str>]| a.iter().map(|x| x.map(String::from)).collect::<Vec<_>>();
        assert_eq!(
            majority_vote(&answers(&[Some("B"), Some("C"), Some("B")])),
            Some("B")
        );
        assert_eq!(majority_vote(&answers(&[Some("C"), None, Some("B")])), Some("C"));
        assert_eq!(majority_vote(&answers(&[None, None])), None);
    }

    #[test]
    fn one_sample_is_not_called_a_vote() {
        let mut report = EvalReport {
            samples: 1,
            temperature: 1.0,
            ..EvalReport::default()
        };
        assert_eq!(decoding(&report), "T=1, k=1");
        report.samples = 8;
        assert_eq!(decoding(&report), "T=1, k=8 (vote)");
        report.temperature = 0.0;
        assert_eq!(decoding(&report), "greedy");
    }

    #[test]
    fn meta_groups_read_a_string_or_an_object_s_fields() {
        let mut example = Example::default();
        assert!(meta_groups(&example).is_empty());
        example.metadata.insert("meta_info".into(), json!("step1"));
        assert_eq!(meta_groups(&example), vec!["step1"]);
        example.metadata.insert(
            "meta_info".into(),
            json!({"difficulty": "hard", "kind": "test", "x": [1]}),
        );
        assert_eq!(meta_groups(&example), vec!["difficulty=hard", "kind=test"]);
    }

    #[test]
    fn greedy_decoding_cannot_take_several_samples() {
        let settings = EvalSection {
            samples: 4,
            temperature: 0.0,
            ..EvalSection::default()
        };
        let err = check_settings(&settings).unwrap_err().to_string();
        assert!(err.contains("4 samples") && err.contains("temperature"), "{err}");
        let many = EvalSection {
            samples: MAX_EVAL_ROWS + 1,
            temperature: 1.0,
            ..EvalSection::default()
        };
        let err = check_settings(&many).unwrap_err().to_string();
        assert!(err.contains("--samples") && err.contains("1025"), "{err}");
    }

    #[test]
    fn only_the_gold_letter_is_right() {
        let example = Example {
            answer: Some("B".into()),
            ..Example::default()
        };
        assert!(is_gold(&example, Some("B")));
        assert!(!is_gold(&example, Some("C")) && !is_gold(&example, None));
    }
}
