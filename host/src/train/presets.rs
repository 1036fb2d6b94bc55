//! Reward presets: the Clinical-R1 recipes as one config line, each with the system prompt
//! that asks for its format.

use crate::plugins::ObjectiveSpec;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The paper, Eq. 4: 10·accuracy + clinical_reasoning + 0.5·consistency.
    Crpo,
    /// The paper's reward plus the beyond-paper faithfulness and comprehensiveness (weight 1
    /// each): what the demo's CRPO arm trains (docs/objectives.md says why).
    CrpoFull,
    /// GRPO in the paper's format: the reward is accuracy alone; the clinical objectives are
    /// computed and logged at weight 0. The demo's matched baseline (same prompt and format).
    Grpo,
    /// The released code: 10·accuracy + format_code + 0.5·consistency.
    CrpoCode,
    /// The released code's GRPO baseline: 10·accuracy + a generic thinking format
    /// (format_code), with the `<think>/<answer>` prompt.
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
    pub const ALL: [Preset; 5] = [
        Preset::Crpo,
        Preset::CrpoFull,
        Preset::Grpo,
        Preset::CrpoCode,
        Preset::GrpoBaseline,
    ];

    /// The name a config uses (`crpo-full`).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Crpo => "crpo",
            Preset::CrpoFull => "crpo-full",
            Preset::Grpo => "grpo",
            Preset::CrpoCode => "crpo-code",
            Preset::GrpoBaseline => "grpo-baseline",
        }
    }

    pub fn from_name(name: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The reward as a formula: `10·accuracy + clinical_reasoning + 0.5·consistency`; objectives
    /// at weight 0 are logged, not summed.
    pub fn formula(self) -> String {
        let terms: Vec<String> = self
            .weighted_objectives()
            .iter()
            .filter(|(_, w)| *w != 0.0)
            .map(|(name, w)| {
                if *w == 1.0 {
                    name.to_string()
                } else {
                    format!("{w}·{name}")
                }
            })
            .collect();
        terms.join(" + ")
    }

    /// (plugin, weight) of each objective.
    pub fn weighted_objectives(self) -> &'static [(&'static str, f32)] {
        match self {
            Preset::Crpo => &[
                ("accuracy", 10.0),
                ("clinical_reasoning", 1.0),
                ("consistency", 0.5),
            ],
            Preset::CrpoFull => &[
                ("accuracy", 10.0),
                ("clinical_reasoning", 1.0),
                ("consistency", 0.5),
                ("faithfulness", 1.0),
                ("comprehensiveness", 1.0),
            ],
            Preset::Grpo => &[
                ("accuracy", 10.0),
                ("clinical_reasoning", 0.0),
                ("consistency", 0.0),
                ("faithfulness", 0.0),
                ("comprehensiveness", 0.0),
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
            Preset::Crpo | Preset::CrpoFull | Preset::Grpo => CRPO_SYSTEM,
            Preset::CrpoCode | Preset::GrpoBaseline => THINK_ANSWER_SYSTEM,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_the_config_spelling() {
        for preset in Preset::ALL {
            assert_eq!(Preset::from_name(preset.name()), Some(preset));
            let json = serde_json::to_value(preset).unwrap();
            assert_eq!(json, preset.name());
        }
        assert_eq!(
            Preset::Crpo.formula(),
            "10·accuracy + clinical_reasoning + 0.5·consistency"
        );
        assert_eq!(Preset::Grpo.formula(), "10·accuracy");
    }
}
