//! A reward objective as a run uses it: a named, weighted instance of a plugin whose every
//! answer is checked, so a faulty plugin fails the step with its name instead of poisoning
//! training with NaN or misaligned scores.

use super::isolation::{
    Execution, IsolatedObjective, Isolation, TimedObjective, WorkerInit, DEFAULT_TIMEOUT,
};
use super::slow_call::Watchdog;
use super::{Origin, PluginRegistry};
use crpo_sdk::{check_scores, RewardObjective, Score, ScoreRequest};
use std::sync::Arc;

/// How a run config names an objective: `name` (defaults to the plugin's), plugin, weight
/// (defaults to the plugin's), the plugin's options, and where and how long it runs.
#[derive(Debug, Clone, Default)]
pub struct ObjectiveSpec {
    pub name: Option<String>,
    pub plugin: String,
    pub weight: Option<f32>,
    pub options: serde_json::Value,
    pub execution: Execution,
}

pub struct ConfiguredObjective {
    pub name: String,
    pub plugin: String,
    pub origin: Origin,
    pub weight: f32,
    objective: Box<dyn RewardObjective>,
    /// How the watchdog names this objective, when its calls have no time limit.
    unlimited: Option<Arc<str>>,
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
        let plugin = registered.plugin();
        let execution = &spec.execution;
        let mut unlimited = None;
        let objective: Box<dyn RewardObjective> = match execution.isolation {
            Isolation::Process => {
                let (dirs, trust) = registry.sources();
                let init = WorkerInit {
                    plugin_dirs: dirs.to_vec(),
                    pins: trust.pins.clone(),
                    allow_insecure: trust.allow_insecure,
                    plugin: spec.plugin.clone(),
                    options: spec.options.clone(),
                };
                let timeout = execution.timeout.unwrap_or(DEFAULT_TIMEOUT);
                Box::new(
                    IsolatedObjective::start(init, timeout, execution.retries)
                        .map_err(|e| fail(e.to_string()))?,
                )
            }
            Isolation::InProcess => {
                let objective = plugin.create(&spec.options).map_err(|e| fail(e.to_string()))?;
                match execution
                    .timeout
                    .or((!plugin.is_cheap()).then_some(DEFAULT_TIMEOUT))
                {
                    Some(timeout) => Box::new(TimedObjective {
                        inner: Arc::from(objective),
                        timeout,
                    }),
                    None => {
                        unlimited = Some(Arc::from(format!(
                            "objective `{name}` (plugin `{}` from {})",
                            spec.plugin, registered.origin
                        )));
                        objective
                    }
                }
            }
        };
        Ok(ConfiguredObjective {
            name: name.clone(),
            plugin: spec.plugin.clone(),
            origin: registered.origin.clone(),
            weight,
            objective,
            unlimited,
        })
    }

    /// Scores a group, checking one finite score per completion.
    pub fn score_group(&self, request: &ScoreRequest<'_>) -> Result<Vec<Score>, ObjectiveError> {
        let _watched = self.unlimited.as_ref().map(|what| Watchdog::global().watch(what));
        let mut scores = self
            .objective
            .score_group(request)
            .map_err(|e| self.failed(e.to_string()))?;
        check_scores(&scores, request.completions.len()).map_err(|e| self.failed(e))?;
        // −0 is 0: printed as `-0.000` in samples, tables and the report it reads as a penalty.
        for score in &mut scores {
            if score.value == 0.0 {
                score.value = 0.0;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn create(timeout: Option<Duration>) -> ConfiguredObjective {
        let spec = ObjectiveSpec {
            plugin: "accuracy".into(),
            execution: Execution {
                timeout,
                ..Execution::default()
            },
            ..ObjectiveSpec::default()
        };
        ConfiguredObjective::create(&PluginRegistry::builtin_only(), &spec).unwrap()
    }

    #[test]
    fn only_calls_without_a_time_limit_are_watched() {
        let cheap = create(None);
        assert!(cheap
            .unlimited
            .as_deref()
            .unwrap()
            .contains("objective `accuracy`"));
        assert!(create(Some(Duration::from_secs(5))).unlimited.is_none());
    }
}
