//! `length_penalty`: DAPO's soft overlong penalty on the completion's text, with a budget
//! given as options, so one run can use it twice with two budgets.
//!
//! Options: `max_length` (required), `buffer` (default `max_length / 4`), `unit` = `"words"`
//! (default: whitespace-separated words) or `"chars"` (Unicode code points). With length n
//! (after the common preprocessing: cut at `<|im_end|>`, stripped):
//! 0 when n ≤ max_length − buffer; (max_length − buffer − n) / buffer up to max_length, so it
//! falls linearly to −1; −1 beyond. Example (max_length 100, buffer 20, words): 80 words → 0,
//! 90 → −0.5, 120 → −1. The trainer's own `algorithm.overlong_buffer_length` does the same in
//! tokens.

use crpo_sdk::rules::preprocess;
use crpo_sdk::{
    overlong_penalty, parse_options, PluginError, PluginInfo, RewardObjective, RewardPlugin, Score,
    ScoreRequest,
};
use serde::Deserialize;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    #[default]
    Words,
    Chars,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct LengthOptions {
    pub max_length: usize,
    #[serde(default)]
    pub buffer: Option<usize>,
    #[serde(default)]
    pub unit: Unit,
}

#[derive(Debug, Clone, Copy)]
pub struct LengthPenalty {
    pub max_length: usize,
    pub buffer: usize,
    pub unit: Unit,
}

impl LengthPenalty {
    pub fn length(&self, completion: &str) -> usize {
        let text = preprocess(completion);
        match self.unit {
            Unit::Words => text.split_whitespace().count(),
            Unit::Chars => text.chars().count(),
        }
    }

    pub fn penalty(&self, length: usize) -> f32 {
        overlong_penalty(length, self.max_length, self.buffer)
    }
}

pub struct LengthPenaltyPlugin;

impl RewardPlugin for LengthPenaltyPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo::new(
            "length_penalty",
            env!("CARGO_PKG_VERSION"),
            "0 within max_length - buffer, falling linearly to -1 at max_length (words or chars; options)",
        )
    }

    fn default_weight(&self) -> f32 {
        1.0
    }

    fn is_cheap(&self) -> bool {
        true
    }

    fn create(&self, options: &serde_json::Value) -> Result<Box<dyn RewardObjective>, PluginError> {
        let options: LengthOptions = parse_options(options)?;
        let buffer = options.buffer.unwrap_or(options.max_length / 4);
        if options.max_length == 0 {
            return Err(PluginError::InvalidOption {
                option: "max_length".into(),
                message: "must be at least 1".into(),
            });
        }
        if buffer == 0 || buffer > options.max_length {
            return Err(PluginError::InvalidOption {
                option: "buffer".into(),
                message: format!(
                    "{buffer}: must be between 1 and max_length ({})",
                    options.max_length
                ),
            });
        }
        Ok(Box::new(LengthPenalty {
            max_length: options.max_length,
            buffer,
            unit: options.unit,
        }))
    }
}

impl RewardObjective for LengthPenalty {
    fn score_group(&self, request: &ScoreRequest<'_>) -> Result<Vec<Score>, PluginError> {
        Ok(request
            .completions
            .iter()
            .map(|c| {
                let length = self.length(c);
                Score::new(self.penalty(length)).with("length", length as f32)
            })
            .collect())
    }
}

crpo_sdk::register_reward!(LengthPenaltyPlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(options: serde_json::Value) -> Result<Box<dyn RewardObjective>, PluginError> {
        LengthPenaltyPlugin.create(&options)
    }

    fn scores(options: serde_json::Value, completions: &[&str]) -> Vec<f32> {
        let example = crpo_sdk::Example::default();
        let request = ScoreRequest::new(&example, "", completions);
        create(options)
            .unwrap()
            .score_group(&request)
            .unwrap()
            .iter()
            .map(|s| s.value)
            .collect()
    }

    #[test]
    fn the_soft_ramp_in_words_and_chars() {
        let words = |n: usize| vec!["w"; n].join(" ");
        let (w80, w90, w120) = (words(80), words(90), words(120));
        assert_eq!(
            scores(json!({"max_length": 100, "buffer": 20}), &[&w80, &w90, &w120, ""]),
            [0.0, -0.5, -1.0, 0.0]
        );
        assert_eq!(
            scores(
                json!({"max_length": 4, "buffer": 2, "unit": "chars"}),
                &["ab", "abc", "ßßßß<|im_end|>junk"]
            ),
            [0.0, -0.5, -1.0]
        );
    }

    #[test]
    fn two_budgets_from_one_plugin_and_bad_options_named() {
        let text = vec!["w"; 30].join(" ");
        assert_eq!(scores(json!({"max_length": 40}), &[&text]), [0.0]);
        assert_eq!(scores(json!({"max_length": 20}), &[&text]), [-1.0]);
        let err = |options| create(options).err().unwrap().to_string();
        assert!(err(json!({})).contains("max_length"));
        assert!(err(json!({"max_length": 10, "buffer": 11})).contains("buffer"));
        assert!(err(json!({"max_length": 10, "unit": "tokens"})).contains("unit"));
    }
}
