//! `option_coverage`: the share of the answer options the reasoning names.
use crpo_sdk::rules::{chosen_option, clauses, names_option, reasoning};
use crpo_sdk::{reward_fn, Example, Score};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Count only options other than the chosen one (a differential diagnosis).
    pub others_only: bool,
}

/// The share of options some clause of the reasoning names (by text or by letter).
pub fn option_coverage(example: &Example, completion: &str, options: &Options) -> Score {
    let chosen = chosen_option(&example.options, completion);
    let clauses = clauses(reasoning(completion));
    let (mut named, mut counted) = (0, 0);
    for option in example.options.iter() {
        if !(options.others_only && Some(option) == chosen) {
            counted += 1;
            named += clauses.iter().any(|c| names_option(c, option)) as usize;
        }
    }
    Score::new(named as f32 / counted.max(1) as f32).with("named", named as f32)
}

crpo_sdk::export_plugin_library! {
    rewards: [reward_fn!(option_coverage, "share of the answer options the reasoning names")],
    datasets: [],
}
