//! The shorthand for the common objective: stateless, each completion scored on its own by
//! one function of the example, the completion and typed options. [`reward_fn!`] makes the
//! plugin (name, version, description, options parsing) and its objective from the function.
//! The long form ([`RewardPlugin`] + [`RewardObjective`]) stays for objectives that compare
//! completions of a group or keep state.

use crate::error::{PluginError, Result};
use crate::example::Example;
use crate::options::parse_options;
use crate::reward::{RewardObjective, RewardPlugin, Score, ScoreRequest};
use crate::PluginInfo;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;

/// What a reward function may return: a [`Score`] or a bare `f32`, or either in a
/// [`Result`] when scoring can fail.
pub trait IntoScore {
    fn into_score(self) -> Result<Score>;
}

impl IntoScore for Score {
    fn into_score(self) -> Result<Score> {
        Ok(self)
    }
}

impl IntoScore for f32 {
    fn into_score(self) -> Result<Score> {
        Ok(Score::new(self))
    }
}

impl<T: IntoScore> IntoScore for Result<T, PluginError> {
    fn into_score(self) -> Result<Score> {
        self.and_then(IntoScore::into_score)
    }
}

/// A reward plugin made from one function `score(example, completion, options)`, where
/// `options: &O` is the objective's options table parsed into `O` (use
/// `#[serde(deny_unknown_fields)]` on it, and [`crate::NoOptions`] for none). Usually made by
/// [`reward_fn!`], which fills in the name and the crate's version.
pub struct RewardFn<O, F> {
    name: &'static str,
    version: &'static str,
    description: &'static str,
    default_weight: f32,
    cheap: bool,
    score: F,
    options: PhantomData<fn() -> O>,
}

impl<O, F, R> RewardFn<O, F>
where
    O: DeserializeOwned + Send + Sync + 'static,
    F: Fn(&Example, &str, &O) -> R + Clone + Send + Sync + 'static,
    R: IntoScore,
{
    /// A plugin `name` at `version` (a `const fn`, so a built-in can be a `static`).
    pub const fn new(name: &'static str, version: &'static str, description: &'static str, score: F) -> Self {
        RewardFn {
            name,
            version,
            description,
            default_weight: 1.0,
            cheap: true,
            score,
            options: PhantomData,
        }
    }

    /// The weight used when the run config gives none (default 1).
    pub fn weight(self, default_weight: f32) -> Self {
        RewardFn {
            default_weight,
            ..self
        }
    }

    /// Marks scoring as slow (see [`RewardPlugin::is_cheap`]).
    pub fn slow(self) -> Self {
        RewardFn { cheap: false, ..self }
    }
}

impl<O, F, R> RewardPlugin for RewardFn<O, F>
where
    O: DeserializeOwned + Send + Sync + 'static,
    F: Fn(&Example, &str, &O) -> R + Clone + Send + Sync + 'static,
    R: IntoScore,
{
    fn info(&self) -> PluginInfo {
        PluginInfo::new(self.name, self.version, self.description)
    }

    fn default_weight(&self) -> f32 {
        self.default_weight
    }

    fn is_cheap(&self) -> bool {
        self.cheap
    }

    fn create(&self, options: &serde_json::Value) -> Result<Box<dyn RewardObjective>> {
        let options: O = parse_options(options)?;
        Ok(Box::new(FnObjective {
            options,
            score: self.score.clone(),
        }))
    }
}

struct FnObjective<O, F> {
    options: O,
    score: F,
}

impl<O, F, R> RewardObjective for FnObjective<O, F>
where
    O: Send + Sync,
    F: Fn(&Example, &str, &O) -> R + Send + Sync,
    R: IntoScore,
{
    fn score_group(&self, request: &ScoreRequest<'_>) -> Result<Vec<Score>> {
        request
            .completions
            .iter()
            .map(|completion| (self.score)(request.example, completion, &self.options).into_score())
            .collect()
    }
}

/// A reward plugin from a function, named after it, at the calling crate's version:
///
/// ```
/// use crpo_sdk::{Example, NoOptions, Score};
///
/// /// 1 when the completion ends with the gold answer.
/// fn ends_with_gold(example: &Example, completion: &str, _: &NoOptions) -> Score {
///     let gold = example.answer.as_deref().unwrap_or("\u{0}");
///     Score::new(if completion.trim_end().ends_with(gold) { 1.0 } else { 0.0 })
/// }
///
/// let plugin = crpo_sdk::reward_fn!(ends_with_gold, "1 when the completion ends with the gold answer")
///     .weight(2.0);
/// # use crpo_sdk::RewardPlugin;
/// assert_eq!(plugin.info().name, "ends_with_gold");
/// ```
///
/// Export it with `crpo_sdk::export_plugin_library! { rewards: [reward_fn!(…)], datasets: [] }`
/// (a library) or `crpo_sdk::register_reward!` of a `static` (built in).
#[macro_export]
macro_rules! reward_fn {
    ($function:ident, $description:expr $(,)?) => {
        $crate::RewardFn::new(
            ::std::stringify!($function),
            ::std::env!("CARGO_PKG_VERSION"),
            $description,
            $function,
        )
    };
}

#[cfg(test)]
mod tests {
    use crate::testing::{example_from_json, score_one};
    use crate::{Example, PluginError, Score};

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {
        word: String,
    }

    /// 1 per occurrence of `word`; fails on an empty completion.
    fn word_count(_: &Example, completion: &str, options: &Options) -> Result<f32, PluginError> {
        if completion.is_empty() {
            return Err(PluginError::failed("empty completion"));
        }
        Ok(completion.matches(options.word.as_str()).count() as f32)
    }

    #[test]
    fn a_function_becomes_a_plugin_with_typed_options() {
        let plugin = reward_fn!(word_count, "occurrences of a word").weight(3.0).slow();
        use crate::RewardPlugin;
        let info = plugin.info();
        assert_eq!(
            (info.name.as_str(), info.version.as_str()),
            ("word_count", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!((plugin.default_weight(), plugin.is_cheap()), (3.0, false));
        let example =
            example_from_json(r#"{"question": "q", "options": {"A": "x"}, "answer_idx": "A"}"#).unwrap();
        let options = serde_json::json!({"word": "fever"});
        assert_eq!(
            score_one(&plugin, &options, &example, "fever, fever").unwrap(),
            Score::new(2.0)
        );
        let failed = score_one(&plugin, &options, &example, "").unwrap_err();
        assert_eq!(failed, PluginError::failed("empty completion"));
        let unknown = score_one(&plugin, &serde_json::json!({"wrd": "x"}), &example, "x").unwrap_err();
        assert!(matches!(unknown, PluginError::InvalidOption { ref option, .. } if option == "wrd"));
    }
}
