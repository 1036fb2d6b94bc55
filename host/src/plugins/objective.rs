//! A reward objective as a run uses it: a named, weighted instance of a plugin whose every
//! answer is checked, so a faulty plugin fails the step with its name instead of poisoning
//! training with NaN or misaligned scores.

use super::{Origin, PluginRegistry};
use crpo_sdk::{RewardObjective, Score, ScoreRequest};

/// How a run config names an objective: `name` (defaults to the plugin's), plugin, weight
/// (defaults to the plugin's) and the plugin's options.
#[derive(Debug, Clone)]
pub struct ObjectiveSpec {
    pub name: Option<String>,
    pub plugin: String,
    pub weight: Option<f32>,
    pub options: serde_json::Value,
}

pub struct ConfiguredObjective {
    pub name: String,
    pub plugin: String,
    pub origin: Origin,
    pub weight: f32,
    objective: Box<dyn RewardObjective>,
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectiveError {
    #[error(transparent)]
    Plugin(#[from] super::PluginLoadError),
    #[error("objective `{name}` (plugin `{plugin}` from {origin}): {message}")]
    Failed {
        name: String,
        plugin: String,
        origin: String,
        message: String,
    },
}

impl ConfiguredObjective {
    pub fn create(registry: &PluginRegistry, spec: &ObjectiveSpec) -> Result<Self, ObjectiveError> {
        let registered = registry.reward(&spec.plugin)?;
        let name = spec.name.clone().unwrap_or_else(|| spec.plugin.clone());
        let fail = |message: String| ObjectiveError::Failed {
            name: name.clone(),
            plugin: spec.plugin.clone(),
            origin: registered.origin.to_string(),
            message,
        };
        let weight = spec
            .weight
            .unwrap_or_else(|| registered.plugin().default_weight());
        if !weight.is_finite() {
            return Err(fail(format!("weight {weight} is not a finite number")));
        }
        let objective = registered
            .plugin()
            .create(&spec.options)
            .map_err(|e| fail(e.to_string()))?;
        Ok(ConfiguredObjective {
            name: name.clone(),
            plugin: spec.plugin.clone(),
            origin: registered.origin.clone(),
            weight,
            objective,
        })
    }

    /// Scores a group, checking one finite score per completion.
    pub fn score_group(&self, request: &ScoreRequest<'_>) -> Result<Vec<Score>, ObjectiveError> {
        let scores = self
            .objective
            .score_group(request)
            .map_err(|e| self.failed(e.to_string()))?;
        if scores.len() != request.completions.len() {
            return Err(self.failed(format!(
                "returned {} scores for {} completions",
                scores.len(),
                request.completions.len()
            )));
        }
        if let Some((i, bad)) = scores.iter().enumerate().find(|(_, s)| !s.value.is_finite()) {
            return Err(self.failed(format!(
                "returned a non-finite score {} for completion {i}",
                bad.value
            )));
        }
        Ok(scores)
    }

    fn failed(&self, message: String) -> ObjectiveError {
        ObjectiveError::Failed {
            name: self.name.clone(),
            plugin: self.plugin.clone(),
            origin: self.origin.to_string(),
            message,
        }
    }
}
