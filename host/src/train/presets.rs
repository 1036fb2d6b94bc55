//! Reward presets: the Clinical-R1 recipes as one config line, each with the system prompt
//! that asks for its format.

use crate::plugins::ObjectiveSpec;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The paper, Eq. 4: 10·accuracy + clinical_reasoning + 0.5·consistency.
    Crpo,
    /// The released code: 10·accuracy + format_code + 0.5·consistency.
    CrpoCode,
    /// The paper's GRPO baseline: 10·accuracy + a generic thinking format (format_code).
    GrpoBaseline,
}

const CRPO_SYSTEM: &str = "You are a careful clinician. Reason inside <dx>...</dx>: first \
\"System 1:\" your intuitive impression, then \"System 2:\" an analytical review that weighs \
each option. Then give your final answer inside <conclusion>...</conclusion>, naming the \
diagnosis or option and its letter as \\boxed{X}.";

const THINK_ANSWER_SYSTEM: &str = "You are a careful clinician. Think step by step inside \
<think>...</think>, then answer inside <answer>...</answer> with a short summary and the \
letter of the correct option as \\boxed{X}.";

impl Preset {
    /// (plugin, weight) of each objective.
    pub fn weighted_objectives(self) -> &'static [(&'static str, f32)] {
        match self {
            Preset::Crpo => &[
                ("accuracy", 10.0),
                ("clinical_reasoning", 1.0),
                ("consistency", 0.5),
            ],
            Preset::CrpoCode => &[("accuracy", 10.0), ("format_code", 1.0), ("consistency", 0.5)],
            Preset::GrpoBaseline => &[("accuracy", 10.0), ("format_code", 1.0)],
        }
    }

    pub fn objectives(self) -> Vec<ObjectiveSpec> {
        self.weighted_objectives()
            .iter()
            .map(|&(plugin, weight)| ObjectiveSpec {
                name: None,
                plugin: plugin.to_string(),
                weight: Some(weight),
                options: serde_json::Value::Null,
            })
            .collect()
    }

    pub fn system_prompt(self) -> &'static str {
        match self {
            Preset::Crpo => CRPO_SYSTEM,
            Preset::CrpoCode | Preset::GrpoBaseline => THINK_ANSWER_SYSTEM,
        }
    }
}
