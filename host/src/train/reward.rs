//! The run's reward: its named, weighted objectives (a preset's and the config's own) plus
//! the optional overlong penalty, scoring a group of completions into a `[G, K]` table.

use super::config::{AlgorithmConfig, RunConfig};
use super::maths::overlong_penalty;
use crate::plugins::{ConfiguredObjective, ObjectiveSpec, PluginRegistry};
use anyhow::bail;
use crpo_sdk::{Example, ScoreRequest};

/// The name the overlong penalty is reported under.
pub const OVERLONG: &str = "overlong";

pub struct RunReward {
    pub objectives: Vec<ConfiguredObjective>,
    /// (buffer, max length, weight) of DAPO's soft overlong penalty.
    overlong: Option<(usize, usize, f32)>,
}

/// One scored completion's objective values, in [`RunReward::names`] order.
pub type ScoreRow = Vec<f32>;

impl RunReward {
    pub fn from_config(registry: &PluginRegistry, config: &RunConfig) -> anyhow::Result<Self> {
        let mut specs: Vec<ObjectiveSpec> = config.reward.preset.map(|p| p.objectives()).unwrap_or_default();
        for objective in &config.reward.objectives {
            specs.push(ObjectiveSpec {
                name: objective.name.clone(),
                plugin: objective.plugin.clone(),
                weight: objective.weight,
                options: serde_json::to_value(&objective.options)?,
            });
        }
        Self::from_specs(registry, &specs, &config.algorithm)
    }

    /// The given objectives, plus the algorithm's overlong penalty.
    pub fn from_specs(
        registry: &PluginRegistry,
        specs: &[ObjectiveSpec],
        algorithm: &AlgorithmConfig,
    ) -> anyhow::Result<Self> {
        let objectives = specs
            .iter()
            .map(|spec| ConfiguredObjective::create(registry, spec))
            .collect::<Result<Vec<_>, _>>()?;
        let overlong = (algorithm.overlong_buffer_length > 0).then_some((
            algorithm.overlong_buffer_length,
            algorithm.max_completion_length,
            algorithm.overlong_penalty_factor,
        ));
        let reward = RunReward { objectives, overlong };
        let mut names = reward.names();
        names.sort();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!(
                "two objectives are named `{}`: give one a distinct `name` in [[reward.objectives]]",
                pair[0]
            );
        }
        Ok(reward)
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.objectives.iter().map(|o| o.name.clone()).collect();
        if self.overlong.is_some() {
            names.push(OVERLONG.to_string());
        }
        names
    }

    pub fn weights(&self) -> Vec<f32> {
        let mut weights: Vec<f32> = self.objectives.iter().map(|o| o.weight).collect();
        if let Some((_, _, weight)) = self.overlong {
            weights.push(weight);
        }
        weights
    }

    /// Scores one group: `texts` are the decoded completions, `lengths` their token counts.
    pub fn score_group(
        &self,
        example: &Example,
        prompt: &str,
        texts: &[&str],
        lengths: &[usize],
    ) -> anyhow::Result<Vec<ScoreRow>> {
        let request = ScoreRequest {
            example,
            prompt,
            completions: texts,
        };
        let mut rows: Vec<ScoreRow> = vec![Vec::with_capacity(self.names().len()); texts.len()];
        for objective in &self.objectives {
            for (row, score) in rows.iter_mut().zip(objective.score_group(&request)?) {
                row.push(score.value);
            }
        }
        if let Some((buffer, max_length, _)) = self.overlong {
            for (row, &length) in rows.iter_mut().zip(lengths) {
                row.push(overlong_penalty(length, max_length, buffer));
            }
        }
        Ok(rows)
    }
}
