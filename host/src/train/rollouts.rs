//! Rollouts: G sampled completions per prompt, decoded and scored by every objective, and a
//! step's batch of them ([`Rollouts`]) with its scores, totals and advantages held once.

use super::config::AlgorithmConfig;
use super::data::PromptFormat;
use super::maths;
use super::reward::{GroupScores, RunReward};
use crate::rollout::generation::GenerationStats;
use crate::rollout::sampling::SamplingConfig;
use crate::rollout::Policy;
use anyhow::Context;
use crpo_sdk::Example;
use tch::Tensor;

/// One prompt's group of completions with their scores (serialised to gather a distributed
/// step's groups).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Group {
    pub example: usize,
    pub prompt_text: String,
    pub prompt_ids: Vec<i64>,
    /// The prompt's user content was cut to `algorithm.max_prompt_length`.
    pub prompt_truncated: bool,
    pub completions: Vec<Vec<i64>>,
    pub finished: Vec<bool>,
    pub texts: Vec<String>,
    /// Each completion's objective values, diagnostics, answer and total.
    pub scores: GroupScores,
}

impl Group {
    /// Whether every completion got the same total: no learning signal.
    pub fn is_tied(&self) -> bool {
        maths::is_tied(&self.scores.totals)
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
) -> anyhow::Result<(Vec<Group>, GenerationStats)> {
    let prompts = indices
        .iter()
        .map(|&i| {
            format.render(&policy.tokenizer, &examples[i])?.with_context(|| {
                format!(
                    "example `{}`: its prompt is over algorithm.max_prompt_length",
                    examples[i].id
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let batch: Vec<Vec<i64>> = prompts
        .iter()
        .flat_map(|prompt| std::iter::repeat_n(prompt.ids.clone(), group_size))
        .collect();
    let (completions, stats) = policy.generate(&batch, sampling)?;
    let mut completions = completions.into_iter();
    let mut groups = Vec::with_capacity(indices.len());
    for (&example, prompt) in indices.iter().zip(prompts) {
        let generated: Vec<_> = completions.by_ref().take(group_size).collect();
        let texts = generated
            .iter()
            .map(|c| policy.decode(&c.ids))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let ids: Vec<Vec<u32>> = generated
            .iter()
            .map(|c| c.ids.iter().map(|&id| id as u32).collect())
            .collect();
        let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let scores = reward
            .score_group(&examples[example], &prompt.text, &text_refs, &ids)
            .with_context(|| format!("scoring example `{}`", examples[example].id))?;
        groups.push(Group {
            example,
            prompt_text: prompt.text,
            prompt_ids: prompt.ids,
            prompt_truncated: prompt.truncated,
            finished: generated.iter().map(|c| c.finished).collect(),
            completions: generated.into_iter().map(|c| c.ids).collect(),
            texts,
            scores,
        });
    }
    Ok((groups, stats))
}

/// A step's batch: N = groups × G completions, each group's rows consecutive.
pub struct Rollouts {
    pub groups: Vec<Group>,
    pub group_size: usize,
    /// `[N, K]` objective values, row-major.
    pub scores: Vec<f32>,
    /// `[N]` totals.
    pub totals: Vec<f32>,
    pub objectives: usize,
}

impl Rollouts {
    pub fn new(groups: Vec<Group>, group_size: usize, objectives: usize) -> Self {
        let scores = groups
            .iter()
            .flat_map(|g| g.scores.values.iter().flatten().copied())
            .collect();
        let totals = groups
            .iter()
            .flat_map(|g| g.scores.totals.iter().copied())
            .collect();
        Rollouts {
            groups,
            group_size,
            scores,
            totals,
            objectives,
        }
    }

    /// Completions in the batch.
    pub fn len(&self) -> usize {
        self.totals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.totals.is_empty()
    }

    /// Objective `k`'s value of every completion.
    pub fn objective(&self, k: usize) -> Vec<f32> {
        self.scores
            .iter()
            .skip(k)
            .step_by(self.objectives)
            .copied()
            .collect()
    }

    /// Groups whose totals all tie.
    pub fn tied_groups(&self) -> usize {
        self.groups.iter().filter(|g| g.is_tied()).count()
    }

    /// One advantage per completion (docs/algorithm.md).
    pub fn advantages(&self, weights: &[f32], algorithm: &AlgorithmConfig) -> anyhow::Result<Vec<f32>> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let scores = Tensor::from_slice(&self.scores).view([self.len() as i64, self.objectives as i64]);
        let advantages = maths::advantages(
            &Tensor::from_slice(&self.totals),
            &scores,
            &Tensor::from_slice(weights),
            self.group_size,
            algorithm.aggregation,
            algorithm.scale_rewards,
        );
        Ok(Vec::<f32>::try_from(advantages)?)
    }

    /// Each completion's prompt (repeated for its group) and completion ids.
    pub fn sequences(&self) -> (Vec<Vec<i64>>, Vec<Vec<i64>>) {
        let prompts = self
            .groups
            .iter()
            .flat_map(|g| std::iter::repeat_n(g.prompt_ids.clone(), g.completions.len()))
            .collect();
        let completions = self.groups.iter().flat_map(|g| g.completions.clone()).collect();
        (prompts, completions)
    }

    /// Each completion's group and index in it, in batch order.
    pub fn rows(&self) -> impl Iterator<Item = (&Group, usize)> {
        self.groups
            .iter()
            .flat_map(|g| (0..g.completions.len()).map(move |i| (g, i)))
    }
}
