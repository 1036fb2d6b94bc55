//! `{{ident}}`: 1 when the completion's reasoning names the gold option's text or key, and
//! `bonus` more when it also boxes the gold letter. Replace the rule with yours.
use crpo_sdk::rules::{chosen_letter, clauses, names_option, reasoning};
use crpo_sdk::{reward_fn, Example, PluginError, Score};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Added when the boxed answer is the gold letter too.
    pub bonus: f32,
}

impl Default for Options {
    fn default() -> Self {
        Options { bonus: 0.5 }
    }
}

pub fn {{ident}}(example: &Example, completion: &str, options: &Options) -> Result<Score, PluginError> {
    let gold = example.answer.as_deref().ok_or_else(|| PluginError::failed("no gold answer"))?;
    let Some(option) = example.options.iter().find(|o| o.key == gold) else {
        return Ok(Score::new(0.0));
    };
    let named = clauses(reasoning(completion)).iter().any(|c| names_option(c, option));
    let boxed = chosen_letter(completion).map(String::from).as_deref() == Some(gold);
    let value = f32::from(u8::from(named)) + if named && boxed { options.bonus } else { 0.0 };
    Ok(Score::new(value).with("named", f32::from(u8::from(named))))
}

crpo_sdk::export_plugin_library! {
    rewards: [reward_fn!({{ident}}, "1 when the reasoning names the gold option, + bonus when it also boxes it")],
    datasets: [],
}
