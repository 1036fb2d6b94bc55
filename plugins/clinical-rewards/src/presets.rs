//! The Clinical-R1 reward presets: each recipe as one config line, with the system prompt that
//! asks for its format (docs/objectives.md lists them).

use crpo_sdk::RewardPreset;

const CRPO_SYSTEM: &str = "You are a careful clinician. Reason inside <dx>...</dx>: first \
\"System 1:\" your intuitive impression, then \"System 2:\" an analytical review that weighs \
each option. Then give your final answer inside <conclusion>...</conclusion>, naming the \
diagnosis or option and its letter as \\boxed{X}.";

const THINK_ANSWER_SYSTEM: &str = "You are a careful clinician. Think step by step inside \
<think>...</think>, then answer inside <answer>...</answer> with a short summary and the \
letter of the correct option as \\boxed{X}.";

/// The paper, Eq. 4.
pub static CRPO: RewardPreset = RewardPreset {
    name: "crpo",
    description: "the paper's reward (Eq. 4)",
    objectives: &[
        ("accuracy", 10.0),
        ("clinical_reasoning", 1.0),
        ("consistency", 0.5),
    ],
    system_prompt: CRPO_SYSTEM,
};

/// The paper, Eq. 4, with the paper's accuracy (1 or 0) in place of the released code's
/// (which penalises malformed boxes); listed first, so evaluation reads its answers.
pub static CRPO_PAPER: RewardPreset = RewardPreset {
    name: "crpo-paper",
    description: "the paper's reward (Eq. 4) with the paper's 1/0 accuracy",
    objectives: &[
        ("accuracy_binary", 10.0),
        ("clinical_reasoning", 1.0),
        ("consistency", 0.5),
    ],
    system_prompt: CRPO_SYSTEM,
};

/// The paper's reward plus the beyond-paper faithfulness and comprehensiveness: what the
/// demo's CRPO arm trains (docs/objectives.md says why).
pub static CRPO_FULL: RewardPreset = RewardPreset {
    name: "crpo-full",
    description: "the paper's reward plus faithfulness and comprehensiveness",
    objectives: &[
        ("accuracy", 10.0),
        ("clinical_reasoning", 1.0),
        ("consistency", 0.5),
        ("faithfulness", 1.0),
        ("comprehensiveness", 1.0),
    ],
    system_prompt: CRPO_SYSTEM,
};

/// GRPO in the paper's format: accuracy alone; the clinical objectives are computed and logged
/// at weight 0. The demo's matched baseline (same prompt and format as `crpo`).
pub static GRPO: RewardPreset = RewardPreset {
    name: "grpo",
    description: "accuracy alone, in the paper's format (the other objectives logged at weight 0)",
    objectives: &[
        ("accuracy", 10.0),
        ("clinical_reasoning", 0.0),
        ("consistency", 0.0),
        ("faithfulness", 0.0),
        ("comprehensiveness", 0.0),
    ],
    system_prompt: CRPO_SYSTEM,
};

/// The released code's reward.
pub static CRPO_CODE: RewardPreset = RewardPreset {
    name: "crpo-code",
    description: "the released code's reward (<think>/<answer> format)",
    objectives: &[("accuracy", 10.0), ("format_code", 1.0), ("consistency", 0.5)],
    system_prompt: THINK_ANSWER_SYSTEM,
};

/// The released code's GRPO baseline: accuracy and a generic thinking format.
pub static GRPO_BASELINE: RewardPreset = RewardPreset {
    name: "grpo-baseline",
    description: "the released code's GRPO baseline (accuracy and the <think>/<answer> format)",
    objectives: &[("accuracy", 10.0), ("format_code", 1.0)],
    system_prompt: THINK_ANSWER_SYSTEM,
};

crpo_sdk::register_preset!(CRPO);
crpo_sdk::register_preset!(CRPO_PAPER);
crpo_sdk::register_preset!(CRPO_FULL);
crpo_sdk::register_preset!(GRPO);
crpo_sdk::register_preset!(CRPO_CODE);
crpo_sdk::register_preset!(GRPO_BASELINE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_name_registered_objectives_and_ask_for_their_format() {
        let names: Vec<&str> = crpo_sdk::registry::builtin_plugins()
            .filter_map(|p| match p {
                crpo_sdk::registry::BuiltinPlugin::Reward(r) => Some(r.info().name),
                _ => None,
            })
            .map(|n| Box::leak(n.into_boxed_str()) as &str)
            .collect();
        for preset in [&CRPO, &CRPO_PAPER, &CRPO_FULL, &GRPO, &CRPO_CODE, &GRPO_BASELINE] {
            for (objective, _) in preset.objectives {
                assert!(names.contains(objective), "{}: {objective}", preset.name);
            }
        }
        assert!(CRPO.system_prompt.contains("<dx>") && CRPO_CODE.system_prompt.contains("<think>"));
        assert_eq!(
            CRPO.formula(),
            "10·accuracy + clinical_reasoning + 0.5·consistency"
        );
        assert_eq!(GRPO.formula(), "10·accuracy");
        assert_eq!(
            CRPO_PAPER.formula(),
            "10·accuracy_binary + clinical_reasoning + 0.5·consistency"
        );
    }
}
