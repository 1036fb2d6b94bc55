//! The shape the rule objectives share: no options, each completion scored on its own by
//! a pure function of the example and the completion.

use crpo_sdk::{
    parse_options, Example, NoOptions, PluginError, PluginInfo, RewardObjective, RewardPlugin, Score,
    ScoreRequest,
};

/// A rule objective, registered as a static: `crpo_sdk::register_reward!(ACCURACY);`
pub struct RuleObjective {
    pub name: &'static str,
    pub description: &'static str,
    pub default_weight: f32,
    pub rule: fn(&Example, &str) -> Result<Score, PluginError>,
}

impl RuleObjective {
    /// One completion's score (NaN if the rule fails): for tests and examples in docs.
    pub fn score_one(&self, example: &Example, completion: &str) -> f32 {
        (self.rule)(example, completion).map_or(f32::NAN, |s| s.value)
    }
}

impl RewardPlugin for RuleObjective {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(self.name, env!("CARGO_PKG_VERSION"), self.description)
    }

    fn default_weight(&self) -> f32 {
        self.default_weight
    }

    fn create(&self, options: &serde_json::Value) -> Result<Box<dyn RewardObjective>, PluginError> {
        parse_options::<NoOptions>(options)?;
        Ok(Box::new(RuleScorer(self.rule)))
    }
}

struct RuleScorer(fn(&Example, &str) -> Result<Score, PluginError>);

impl RewardObjective for RuleScorer {
    fn score_group(&self, request: &ScoreRequest<'_>) -> Result<Vec<Score>, PluginError> {
        request
            .completions
            .iter()
            .map(|c| (self.0)(request.example, c))
            .collect()
    }
}
