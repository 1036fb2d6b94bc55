//! Built-in clinical reward objectives. The four of the Clinical-R1 paper and its released
//! code follow `docs/reward-rules.md` (REWARD_RULES) exactly; each module's header states its rule.

pub mod accuracy;
pub mod clinical_reasoning;
pub mod comprehensiveness;
pub mod consistency;
pub mod exact_match;
pub mod faithfulness;
pub mod format_code;
pub mod length_penalty;
pub mod presets;
pub mod reasoning;
pub mod rule;
