//! The run's reward: its named, weighted objectives (a preset's and the config's own) plus
//! the optional overlong penalty, scoring a group of completions into a `[G, K]` table.

use super::config::{AlgorithmConfig, RunConfig};
use super::maths::weighted_total;
use crate::plugins::{ConfiguredObjective, ObjectiveSpec, PluginRegistry};
use anyhow::{bail, Context};
use crpo_sdk::{overlong_penalty, Example, ScoreRequest};

/// Built-in objectives that compare a completion with the example's gold answer.
const GOLD_OBJECTIVES: [&str; 3] = ["accuracy", "accuracy_binary", "exact_match"];

/// The built-in objectives that score an option's letter (free-text answers cannot score).
const LETTER_OBJECTIVES: [&str; 2] = ["accuracy", "accuracy_binary"];

/// The name the overlong penalty is reported under.
pub const OVERLONG: &str = "overlong";

pub struct RunReward {
    pub objectives: Vec<ConfiguredObjective>,
    /// (buffer, max length, weight) of DAPO's soft overlong penalty.
    overlong: Option<(usize, usize, f32)>,
}

/// One scored completion's objective values, in [`RunReward::names`] order.
pub type ScoreRow = Vec<f32>;

/// A group's scores: each completion's objective values, diagnostics and answer.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GroupScores {
    /// `[G][K]` objective values, in [`RunReward::names`] order.
    pub values: Vec<ScoreRow>,
    /// Per completion, each objective's diagnostics as `objective/diagnostic` → value.
    pub diagnostics: Vec<Vec<(String, f32)>>,
    /// Per completion, the answer the answer-reading objective read ([`RunReward::answers_from`]).
    pub answers: Vec<Option<String>>,
    /// Per completion, the weighted total: the reward.
    pub totals: Vec<f32>,
}

impl RunReward {
    pub fn from_config(registry: &PluginRegistry, config: &RunConfig) -> anyhow::Result<Self> {
        let mut specs: Vec<ObjectiveSpec> = match &config.reward.preset {
            Some(name) => preset_objectives(registry.preset(name).context("reward.preset")?),
            None => Vec::new(),
        };
        // Where the config file gives each entry: a plugin's refusal (a misspelt option) names it.
        let mut places: Vec<Option<String>> = vec![None; specs.len()];
        for objective in &config.reward.objectives {
            let entry = format!("[[reward.objectives]] with plugin = \"{}\"", objective.plugin);
            places.push(Some(match &objective.place {
                Some(place) => format!("{place}: {entry}"),
                None => entry,
            }));
            specs.push(ObjectiveSpec {
                name: objective.name.clone(),
                plugin: objective.plugin.clone(),
                weight: objective.weight.map(|weight| weight as f32),
                options: serde_json::to_value(&objective.options)?,
                execution: objective.execution(),
            });
        }
        Self::build(registry, &specs, &places, &config.algorithm)
    }

    /// The given objectives, plus the algorithm's overlong penalty.
    pub fn from_specs(
        registry: &PluginRegistry,
        specs: &[ObjectiveSpec],
        algorithm: &AlgorithmConfig,
    ) -> anyhow::Result<Self> {
        Self::build(registry, specs, &[], algorithm)
    }

    /// As [`Self::from_specs`]; an objective that cannot be made is named by its `places`
    /// entry when it has one.
    fn build(
        registry: &PluginRegistry,
        specs: &[ObjectiveSpec],
        places: &[Option<String>],
        algorithm: &AlgorithmConfig,
    ) -> anyhow::Result<Self> {
        let objectives = specs
            .iter()
            .enumerate()
            .map(|(index, spec)| {
                ConfiguredObjective::create(registry, spec).map_err(|error| {
                    match places.get(index).cloned().flatten() {
                        Some(place) => anyhow::Error::new(error).context(place),
                        None => anyhow::Error::new(error),
                    }
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let overlong = (algorithm.overlong_buffer_length > 0).then_some((
            algorithm.overlong_buffer_length,
            algorithm.max_completion_length,
            algorithm.overlong_penalty_factor,
        ));
        let reward = RunReward { objectives, overlong };
        let names = reward.names();
        for (second, name) in names.iter().enumerate() {
            let Some(first) = names[..second].iter().position(|earlier| earlier == name) else {
                continue;
            };
            // The config's line of the later entry (or the earlier: a preset's have none).
            let place = places
                .get(second)
                .cloned()
                .flatten()
                .or_else(|| places.get(first).cloned().flatten());
            let message = format!(
                "two objectives are named `{name}`: give one a distinct `name` in [[reward.objectives]]{}",
                if !places.is_empty() && places.get(first).is_some_and(Option::is_none) {
                    " (the first comes from reward.preset)"
                } else {
                    ""
                }
            );
            return Err(match place {
                Some(place) => anyhow::anyhow!("{message}").context(place),
                None => anyhow::anyhow!("{message}"),
            });
        }
        Ok(reward)
    }

    /// Refuses `accuracy` (it scores an option's letter) over data whose examples have no
    /// options (free-text answers, which only `exact_match` scores: no completion could be
    /// right); warns when only some have none. `what` names the data ("data.path X").
    pub fn check_answers_fit(&self, examples: &[Example], what: &str) -> anyhow::Result<()> {
        self.check_golds_given(examples, what)?;
        let Some(accuracy) = self
            .objectives
            .iter()
            .find(|o| LETTER_OBJECTIVES.contains(&o.plugin.as_str()) && o.weight != 0.0)
        else {
            return Ok(());
        };
        let free = examples.iter().filter(|e| e.options.is_empty()).count();
        if free == 0 {
            return Ok(());
        }
        if free == examples.len() {
            bail!(
                "objective `{}` (plugin {}) scores the letter of an option, and none of the {free} examples of {what} has options (free-text answers): no completion could score; use the `exact_match` objective for free text (docs/objectives.md)",
                accuracy.name,
                accuracy.plugin
            );
        }
        tracing::warn!(
            "{free} of the {} examples of {what} have no options (free-text answers), which objective `{}` (plugin {}) cannot score right: use `exact_match` for them",
            examples.len(),
            accuracy.name,
            accuracy.plugin
        );
        Ok(())
    }

    /// The objectives that compare with the gold answer fail at the first example without
    /// one (TRL's prompt-only data, an answer column under another name): refused before a
    /// run starts, naming the first.
    fn check_golds_given(&self, examples: &[Example], what: &str) -> anyhow::Result<()> {
        // Weight 0 included: such an objective is still scored (a diagnostic) and fails alike.
        let Some(objective) = self
            .objectives
            .iter()
            .find(|o| GOLD_OBJECTIVES.contains(&o.plugin.as_str()))
        else {
            return Ok(());
        };
        let mut without = examples.iter().filter(|e| e.answer.is_none());
        if let Some(first) = without.next() {
            bail!(
                "{} of the {} examples of {what} have no gold answer (the first: `{}`), which objective `{}` (plugin {}) compares completions with: give the answer's field (data.options.answer names it for the jsonl and conversational readers, e.g. TRL's `solution`) or leave the objective out",
                1 + without.count(),
                examples.len(),
                first.id,
                objective.name,
                objective.plugin
            );
        }
        Ok(())
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

    /// The objective whose answers evaluation votes on: the one named `accuracy`, else the
    /// first in the run's order (an objective that reads no answer gives none).
    pub fn answers_from(&self) -> Option<usize> {
        self.objectives
            .iter()
            .position(|o| o.name == "accuracy")
            .or((!self.objectives.is_empty()).then_some(0))
    }

    /// Scores one group: `texts` are the decoded completions, `completion_ids` their tokens.
    pub fn score_group(
        &self,
        example: &Example,
        prompt: &str,
        texts: &[&str],
        completion_ids: &[Vec<u32>],
    ) -> anyhow::Result<GroupScores> {
        let request = ScoreRequest::new(example, prompt, texts).with_completion_ids(completion_ids);
        let mut scores = GroupScores {
            values: vec![Vec::with_capacity(self.names().len()); texts.len()],
            diagnostics: vec![Vec::new(); texts.len()],
            answers: vec![None; texts.len()],
            totals: Vec::new(),
        };
        let answers_from = self.answers_from();
        for (index, objective) in self.objectives.iter().enumerate() {
            for (i, score) in objective.score_group(&request)?.into_iter().enumerate() {
                scores.values[i].push(score.value);
                scores.diagnostics[i].extend(
                    score
                        .diagnostics
                        .into_iter()
                        .map(|(name, value)| (format!("{}/{name}", objective.name), value)),
                );
                if Some(index) == answers_from {
                    scores.answers[i] = score.answer;
                }
            }
        }
        if let Some((buffer, max_length, _)) = self.overlong {
            for (row, ids) in scores.values.iter_mut().zip(completion_ids) {
                row.push(overlong_penalty(ids.len(), max_length, buffer));
            }
        }
        let weights = self.weights();
        scores.totals = scores
            .values
            .iter()
            .map(|row| weighted_total(row, &weights))
            .collect();
        Ok(scores)
    }
}

/// A preset's objectives with their weights.
pub fn preset_objectives(preset: &crpo_sdk::RewardPreset) -> Vec<ObjectiveSpec> {
    preset
        .objectives
        .iter()
        .map(|&(plugin, weight)| ObjectiveSpec {
            name: None,
            plugin: plugin.to_string(),
            weight: Some(weight),
            ..ObjectiveSpec::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crpo_sdk::{AnswerOption, Prompt};

    fn example(options: &[&str]) -> Example {
        Example {
            id: "q".into(),
            prompt: Prompt::Text("Q?".into()),
            answer: Some("A".into()),
            options: options
                .iter()
                .zip('A'..)
                .map(|(text, key)| AnswerOption {
                    key: key.to_string(),
                    text: text.to_string(),
                })
                .collect(),
            reference_completion: None,
            metadata: Default::default(),
        }
    }

    fn reward(plugin: &str) -> RunReward {
        let spec = ObjectiveSpec {
            name: None,
            plugin: plugin.into(),
            weight: None,
            options: serde_json::Value::Null,
            execution: Default::default(),
        };
        RunReward::from_specs(
            &PluginRegistry::builtin_only(),
            &[spec],
            &AlgorithmConfig::default(),
        )
        .unwrap()
    }

    /// An objective named twice is named with the config line of the later entry, and a
    /// preset's own is said to come from it.
    #[test]
    fn an_objective_named_twice_names_the_config_line() {
        let config = |objectives: &str| {
            let text = format!("[model]\npath = \"m\"\n[data]\npath = \"d.jsonl\"\n[reward]\n{objectives}");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("run.toml");
            std::fs::write(&path, text).unwrap();
            let config = crate::train::config::RunConfig::load(&path).unwrap();
            RunReward::from_config(&PluginRegistry::builtin_only(), &config)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        let twice = config("[[reward.objectives]]\nplugin = \"consistency\"\n[[reward.objectives]]\nplugin = \"consistency\"\n");
        assert!(
            twice.contains("run.toml:8: [[reward.objectives]] with plugin = \"consistency\": two objectives are named `consistency`"),
            "{twice}"
        );
        let with_preset = config("preset = \"crpo\"\n[[reward.objectives]]\nplugin = \"accuracy\"\n");
        assert!(
            with_preset.contains("(the first comes from reward.preset)"),
            "{with_preset}"
        );
    }

    /// `accuracy` reads an option's letter: over free-text answers no completion could score.
    #[test]
    fn accuracy_over_free_text_answers_is_refused_and_exact_match_is_not() {
        let free = [example(&[]), example(&[])];
        let error = reward("accuracy")
            .check_answers_fit(&free, "data.path d.jsonl")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("exact_match") && error.contains("d.jsonl"),
            "{error}"
        );
        assert!(reward("exact_match").check_answers_fit(&free, "d").is_ok());
        let error = reward("accuracy_binary")
            .check_answers_fit(&free, "d")
            .unwrap_err()
            .to_string();
        assert!(error.contains("(plugin accuracy_binary)"), "{error}");
        let mixed = [example(&["x", "y"]), example(&[])];
        assert!(
            reward("accuracy").check_answers_fit(&mixed, "d").is_ok(),
            "a warning only"
        );
    }

    /// TRL's prompt-only data has no gold: objectives that compare with one are refused
    /// before the run, those that need none are not.
    #[test]
    fn examples_without_a_gold_are_refused_by_objectives_that_compare_with_it() {
        let mut without = example(&[]);
        without.answer = None;
        without.id = "d.jsonl:2".into();
        let data = [example(&[]), without];
        for plugin in ["accuracy", "accuracy_binary", "exact_match"] {
            let error = reward(plugin)
                .check_answers_fit(&data, "data.path d.jsonl")
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("1 of the 2 examples")
                    && error.contains("`d.jsonl:2`")
                    && error.contains(plugin),
                "{error}"
            );
        }
        assert!(reward("consistency").check_answers_fit(&data, "d").is_ok());
    }
}
