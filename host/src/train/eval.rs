//! Evaluation: generate answers to held-out questions (k samples each, majority-voted), and
//! report accuracy and every objective's mean.

use super::config::RunConfig;
use super::data::PromptFormat;
use super::policy::LoadedPolicy;
use super::reward::RunReward;
use super::rollout::sample_groups;
use crpo_plugins_policy::generation::SamplingConfig;
use crpo_plugins_rewards::accuracy::chosen_letter;
use crpo_sdk::Example;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// How the table names the model (by default the end of its path).
    pub label: String,
    pub dataset: String,
    pub model: String,
    pub questions: usize,
    pub samples: usize,
    /// Share of questions whose (majority-voted) boxed letter is the gold option.
    pub accuracy: f64,
    /// Each objective's unweighted mean over every sample.
    pub objectives: BTreeMap<String, f64>,
    /// The weighted total's mean.
    pub reward: f64,
}

/// The most frequent answer; ties go to the one given first.
pub fn majority_vote(answers: &[Option<char>]) -> Option<char> {
    let mut counts: Vec<(char, usize)> = Vec::new();
    for answer in answers.iter().flatten() {
        match counts.iter_mut().find(|(a, _)| a == answer) {
            Some((_, n)) => *n += 1,
            None => counts.push((*answer, 1)),
        }
    }
    let best = counts.iter().map(|(_, n)| *n).max()?;
    counts.into_iter().find(|(_, n)| *n == best).map(|(a, _)| a)
}

pub fn evaluate(
    policy: &LoadedPolicy,
    reward: &RunReward,
    config: &RunConfig,
    examples: &[Example],
    dataset: &str,
) -> anyhow::Result<EvalReport> {
    let settings = &config.eval;
    let count = if settings.limit > 0 {
        settings.limit.min(examples.len())
    } else {
        examples.len()
    };
    let format = PromptFormat::from_config(config);
    let names = reward.names();
    let weights = reward.weights();
    let (mut sums, mut reward_sum, mut correct, mut scored) =
        (vec![0.0f64; names.len()], 0.0f64, 0usize, 0usize);
    let indices: Vec<usize> = (0..count).collect();
    let progress = super::progress::bar(count as u64, 0, "eval");
    for (batch_number, batch) in indices.chunks(settings.batch_size).enumerate() {
        let sampling = SamplingConfig {
            max_new_tokens: settings.max_completion_length,
            min_new_tokens: 0,
            temperature: settings.temperature,
            top_p: 1.0,
            top_k: 0,
            greedy: settings.temperature <= 0.0,
            seed: config.run.seed.wrapping_add(batch_number as u64),
        };
        let groups = sample_groups(
            policy,
            reward,
            examples,
            batch,
            &format,
            settings.samples,
            &sampling,
        )?;
        for group in &groups {
            for row in &group.scores {
                for (sum, value) in sums.iter_mut().zip(row) {
                    *sum += *value as f64;
                }
                scored += 1;
            }
            reward_sum += group.totals(&weights).iter().map(|&t| t as f64).sum::<f64>();
            let answers: Vec<Option<char>> = group.texts.iter().map(|t| chosen_letter(t)).collect();
            let gold = examples[group.example].answer.as_deref();
            if let (Some(vote), Some(gold)) = (majority_vote(&answers), gold) {
                if gold.len() == 1 && gold.starts_with(vote) {
                    correct += 1;
                }
            }
        }
        progress.inc(batch.len() as u64);
    }
    progress.finish_and_clear();
    let per_sample = scored.max(1) as f64;
    Ok(EvalReport {
        label: short(&policy.source.display().to_string()),
        dataset: dataset.to_string(),
        model: policy.source.display().to_string(),
        questions: count,
        samples: settings.samples,
        accuracy: correct as f64 / count.max(1) as f64,
        objectives: names
            .into_iter()
            .zip(sums.iter().map(|s| s / per_sample))
            .collect(),
        reward: reward_sum / per_sample,
    })
}

/// A readable table: one row per report, accuracy and each objective's mean.
pub fn table(reports: &[EvalReport]) -> String {
    let objectives: Vec<&String> = reports
        .first()
        .map(|r| r.objectives.keys().collect())
        .unwrap_or_default();
    let mut header = format!(
        "{:<32} {:>9} {:>9} {:>9}",
        "model / dataset", "questions", "accuracy", "reward"
    );
    for name in &objectives {
        header.push_str(&format!(" {:>18}", name));
    }
    let mut lines = vec![header];
    for report in reports {
        let label = format!("{} / {}", report.label, report.dataset);
        let mut line = format!(
            "{:<32} {:>9} {:>9.3} {:>9.3}",
            label, report.questions, report.accuracy, report.reward
        );
        for name in &objectives {
            line.push_str(&format!(
                " {:>18.3}",
                report.objectives.get(*name).copied().unwrap_or(f64::NAN)
            ));
        }
        lines.push(line);
    }
    lines.join("\n")
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
        assert_eq!(majority_vote(&[Some('B'), Some('C'), Some('B')]), Some('B'));
        assert_eq!(majority_vote(&[Some('C'), None, Some('B')]), Some('C'));
        assert_eq!(majority_vote(&[None, None]), None);
    }
}
