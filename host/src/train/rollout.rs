//! Rollouts: G sampled completions per prompt, decoded and scored by every objective.

use super::data::PromptFormat;
use super::maths::zero_std_group_fraction;
use super::reward::{RunReward, ScoreRow};
use crate::rollout::sampling::SamplingConfig;
use crate::rollout::Policy;
use crpo_sdk::Example;
use tch::Tensor;

/// One prompt's group of completions with their scores.
pub struct Group {
    pub example: usize,
    pub prompt_text: String,
    pub prompt_ids: Vec<i64>,
    pub completions: Vec<Vec<i64>>,
    pub finished: Vec<bool>,
    pub texts: Vec<String>,
    /// `[G][K]` objective values.
    pub scores: Vec<ScoreRow>,
    /// Per completion, each objective's diagnostics (`objective/diagnostic` → value).
    pub diagnostics: Vec<Vec<(String, f32)>>,
    /// Per completion, the answer the accuracy objective read.
    pub answers: Vec<Option<String>>,
}

impl Group {
    /// Weighted totals of the group's completions.
    pub fn totals(&self, weights: &[f32]) -> Vec<f32> {
        self.scores
            .iter()
            .map(|row| row.iter().zip(weights).map(|(s, w)| s * w).sum())
            .collect()
    }

    /// Whether every completion got the same total: no learning signal.
    pub fn is_tied(&self, weights: &[f32]) -> bool {
        let totals = self.totals(weights);
        zero_std_group_fraction(&Tensor::from_slice(&totals), totals.len()) == 1.0
    }
}

/// Samples `group_size` completions for each example in `indices` in one generation batch
/// and scores them.
pub fn sample_groups(
    policy: &Policy,
    reward: &RunReward,
    examples: &[Example],
    indices: &[usize],
    format: &PromptFormat,
    group_size: usize,
    sampling: &SamplingConfig,
) -> anyhow::Result<Vec<Group>> {
    let prompts = indices
        .iter()
        .map(|&i| format.render(&policy.tokenizer, &examples[i]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let batch: Vec<Vec<i64>> = prompts
        .iter()
        .flat_map(|(_, ids)| std::iter::repeat_n(ids.clone(), group_size))
        .collect();
    let mut completions = policy.generate(&batch, sampling)?.0.into_iter();
    let mut groups = Vec::with_capacity(indices.len());
    for (&example, (prompt_text, prompt_ids)) in indices.iter().zip(prompts) {
        let generated: Vec<_> = completions.by_ref().take(group_size).collect();
        let texts = generated
            .iter()
            .map(|c| policy.decode(&c.ids))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let lengths: Vec<usize> = generated.iter().map(|c| c.ids.len()).collect();
        let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let scored = reward.score_group(&examples[example], &prompt_text, &text_refs, &lengths)?;
        groups.push(Group {
            example,
            prompt_text,
            prompt_ids,
            finished: generated.iter().map(|c| c.finished).collect(),
            completions: generated.into_iter().map(|c| c.ids).collect(),
            texts,
            scores: scored.values,
            diagnostics: scored.diagnostics,
            answers: scored.answers,
        });
    }
    Ok(groups)
}
