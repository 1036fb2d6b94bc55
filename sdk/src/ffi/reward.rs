// `#[sabi_trait]` generates impls inside a const block, which this lint flags.
#![allow(non_local_definitions)]

//! Reward plugins across the boundary: what crosses (`FfiRewardPlugin`, `FfiRewardObjective`),
//! the plugin side (`RewardPluginExport`: an author's [`RewardPlugin`] behind the vtable, every
//! call in `catch_unwind`) and the host side (`ForeignRewardPlugin`: the vtable behind the
//! sdk trait again). Methods after a vtable's `last_prefix_field` arrived in later minor
//! versions; a library built before one gets the trait's default body, which falls back to
//! what that library has.

use super::error::FfiPluginError;
use super::panic::{catch_panic, catch_panic_typed};
use super::{exported_info, extension, FfiPluginInfo};
use crate::error::PluginError;
use crate::example::Example;
use crate::reward::{RewardObjective, RewardPlugin, Score, ScoreRequest};
use crate::PluginInfo;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec, Tuple2};
use abi_stable::{sabi_trait, StableAbi};

/// A score as it crosses the boundary (sdk 1.0).
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiScore {
    pub value: f32,
    pub diagnostics: RVec<Tuple2<RString, f32>>,
}

/// A score with the answer the completion gives (sdk 1.4).
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiAnsweredScore {
    pub score: FfiScore,
    pub answer: ROption<RString>,
}

impl From<Score> for FfiAnsweredScore {
    fn from(score: Score) -> Self {
        FfiAnsweredScore {
            answer: score.answer.map(RString::from).into(),
            score: FfiScore {
                value: score.value,
                diagnostics: score
                    .diagnostics
                    .into_iter()
                    .map(|(k, v)| Tuple2(k.into(), v))
                    .collect(),
            },
        }
    }
}

impl From<FfiAnsweredScore> for Score {
    fn from(answered: FfiAnsweredScore) -> Self {
        Score {
            value: answered.score.value,
            diagnostics: answered
                .score
                .diagnostics
                .into_iter()
                .map(|Tuple2(k, v)| (k.into(), v))
                .collect(),
            answer: answered.answer.into_option().map(String::from),
        }
    }
}

/// A configured objective, across the boundary. The example is its JSON form.
#[sabi_trait]
pub trait FfiRewardObjective: Send + Sync {
    #[sabi(last_prefix_field)]
    fn score_group(
        &self,
        example_json: RStr<'_>,
        prompt: RStr<'_>,
        completions: RSlice<'_, RStr<'_>>,
    ) -> RResult<RVec<FfiScore>, RString>;

    /// Since 1.4: scores with their answers and a typed error.
    fn score_group_answered(
        &self,
        example_json: RStr<'_>,
        prompt: RStr<'_>,
        completions: RSlice<'_, RStr<'_>>,
    ) -> RResult<RVec<FfiAnsweredScore>, FfiPluginError> {
        match self.score_group(example_json, prompt, completions) {
            RResult::ROk(scores) => RResult::ROk(
                scores
                    .into_iter()
                    .map(|score| FfiAnsweredScore {
                        score,
                        answer: ROption::RNone,
                    })
                    .collect(),
            ),
            RResult::RErr(message) => RResult::RErr(FfiPluginError::failed(message)),
        }
    }

    /// Since 1.6: with the completions' token ids (empty when the caller has none);
    /// libraries built before 1.6 score without them.
    fn score_group_with_ids(
        &self,
        example_json: RStr<'_>,
        prompt: RStr<'_>,
        completions: RSlice<'_, RStr<'_>>,
        _completion_ids: RSlice<'_, RSlice<'_, u32>>,
    ) -> RResult<RVec<FfiAnsweredScore>, FfiPluginError> {
        self.score_group_answered(example_json, prompt, completions)
    }
}

pub type FfiRewardObjectiveBox = FfiRewardObjective_TO<'static, RBox<()>>;

/// A reward plugin, across the boundary. Options are JSON.
#[sabi_trait]
pub trait FfiRewardPlugin: Send + Sync {
    fn info(&self) -> FfiPluginInfo;
    fn default_weight(&self) -> f32;
    fn create(&self, options_json: RStr<'_>) -> RResult<FfiRewardObjectiveBox, RString>;
    /// The by-name channel of sdk 1.1–1.3 (see [`super::extension`]); frozen since 1.4.
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, RString>;

    /// Since 1.4: `create` with a typed error (an invalid option keeps its name).
    fn create_typed(&self, options_json: RStr<'_>) -> RResult<FfiRewardObjectiveBox, FfiPluginError> {
        self.create(options_json).map_err(FfiPluginError::failed)
    }

    /// Since 1.4 ([`RewardPlugin::is_cheap`]); libraries of 1.1–1.3 answered it through the
    /// extension channel, 1.0 ones not at all (cheap).
    fn is_cheap(&self) -> bool {
        let answer = self.extension(RStr::from_str(extension::REWARD_IS_CHEAP), RStr::from_str("null"));
        match answer {
            RResult::ROk(json) => json.as_str() != "false",
            RResult::RErr(_) => true,
        }
    }
}

pub type FfiRewardPluginBox = FfiRewardPlugin_TO<'static, RBox<()>>;

/// Plugin side: a plugin author's [`RewardPlugin`] behind the FFI trait.
struct RewardPluginExport(Box<dyn RewardPlugin>);

impl FfiRewardPlugin for RewardPluginExport {
    fn info(&self) -> FfiPluginInfo {
        exported_info(|| self.0.info())
    }

    fn default_weight(&self) -> f32 {
        catch_panic("default_weight", || Ok(self.0.default_weight())).unwrap_or(f32::NAN)
    }

    fn create(&self, options_json: RStr<'_>) -> RResult<FfiRewardObjectiveBox, RString> {
        self.create_typed(options_json)
            .map_err(|e| PluginError::from(e).to_string().into())
    }

    fn extension(&self, name: RStr<'_>, _request_json: RStr<'_>) -> RResult<RString, RString> {
        match name.as_str() {
            extension::REWARD_IS_CHEAP => {
                catch_panic("is_cheap", || Ok(self.0.is_cheap().to_string().into()))
            }
            other => RResult::RErr(extension::unknown(other)),
        }
    }

    fn create_typed(&self, options_json: RStr<'_>) -> RResult<FfiRewardObjectiveBox, FfiPluginError> {
        catch_panic_typed("create", || {
            let options: serde_json::Value = serde_json::from_str(options_json.as_str())
                .map_err(|e| PluginError::failed(format!("options are not valid JSON: {e}")))?;
            let objective = self.0.create(&options)?;
            Ok(FfiRewardObjective_TO::from_value(
                RewardObjectiveExport(objective),
                TD_Opaque,
            ))
        })
    }

    fn is_cheap(&self) -> bool {
        catch_panic("is_cheap", || Ok(self.0.is_cheap())).unwrap_or(true)
    }
}

struct RewardObjectiveExport(Box<dyn RewardObjective>);

impl FfiRewardObjective for RewardObjectiveExport {
    fn score_group(
        &self,
        example_json: RStr<'_>,
        prompt: RStr<'_>,
        completions: RSlice<'_, RStr<'_>>,
    ) -> RResult<RVec<FfiScore>, RString> {
        match self.score_group_answered(example_json, prompt, completions) {
            RResult::ROk(scores) => RResult::ROk(scores.into_iter().map(|s| s.score).collect()),
            RResult::RErr(error) => RResult::RErr(PluginError::from(error).to_string().into()),
        }
    }

    fn score_group_answered(
        &self,
        example_json: RStr<'_>,
        prompt: RStr<'_>,
        completions: RSlice<'_, RStr<'_>>,
    ) -> RResult<RVec<FfiAnsweredScore>, FfiPluginError> {
        self.score_group_with_ids(example_json, prompt, completions, RSlice::EMPTY)
    }

    fn score_group_with_ids(
        &self,
        example_json: RStr<'_>,
        prompt: RStr<'_>,
        completions: RSlice<'_, RStr<'_>>,
        completion_ids: RSlice<'_, RSlice<'_, u32>>,
    ) -> RResult<RVec<FfiAnsweredScore>, FfiPluginError> {
        catch_panic_typed("score_group", || {
            let example: Example = serde_json::from_str(example_json.as_str())
                .map_err(|e| PluginError::failed(format!("example is not valid JSON: {e}")))?;
            let texts: Vec<&str> = completions.iter().map(|c| c.as_str()).collect();
            let ids: Vec<Vec<u32>> = completion_ids.iter().map(|ids| ids.to_vec()).collect();
            let request = ScoreRequest::new(&example, prompt.as_str(), &texts).with_completion_ids(&ids);
            let scores = self.0.score_group(&request)?;
            Ok(scores.into_iter().map(FfiAnsweredScore::from).collect())
        })
    }
}

/// Used by [`crate::export_plugin_library!`]: builds the exported reward plugins.
#[doc(hidden)]
pub fn export_rewards(
    make: impl FnOnce() -> Vec<Box<dyn RewardPlugin>>,
) -> RResult<RVec<FfiRewardPluginBox>, RString> {
    catch_panic("reward plugin constructor", || {
        Ok(make().into_iter().map(export_reward).collect())
    })
}

fn export_reward(plugin: Box<dyn RewardPlugin>) -> FfiRewardPluginBox {
    FfiRewardPlugin_TO::from_value(RewardPluginExport(plugin), TD_Opaque)
}

/// Host side: a reward plugin from a library, behind the sdk trait.
pub struct ForeignRewardPlugin(pub FfiRewardPluginBox);

impl RewardPlugin for ForeignRewardPlugin {
    fn info(&self) -> PluginInfo {
        self.0.info().into()
    }

    fn default_weight(&self) -> f32 {
        self.0.default_weight()
    }

    fn is_cheap(&self) -> bool {
        self.0.is_cheap()
    }

    fn create(&self, options: &serde_json::Value) -> Result<Box<dyn RewardObjective>, PluginError> {
        let options = options.to_string();
        let objective = self
            .0
            .create_typed(RStr::from_str(&options))
            .into_result()
            .map_err(PluginError::from)?;
        Ok(Box::new(ForeignRewardObjective(objective)))
    }
}

struct ForeignRewardObjective(FfiRewardObjectiveBox);

impl RewardObjective for ForeignRewardObjective {
    fn score_group(&self, request: &ScoreRequest<'_>) -> Result<Vec<Score>, PluginError> {
        let example = serde_json::to_string(request.example).map_err(PluginError::failed)?;
        let completions: Vec<RStr<'_>> = request.completions.iter().map(|c| RStr::from_str(c)).collect();
        let ids: Vec<RSlice<'_, u32>> = request
            .completion_ids
            .iter()
            .map(|ids| ids.as_slice().into())
            .collect();
        let scores = self
            .0
            .score_group_with_ids(
                RStr::from_str(&example),
                RStr::from_str(request.prompt),
                completions.as_slice().into(),
                ids.as_slice().into(),
            )
            .into_result()
            .map_err(PluginError::from)?;
        Ok(scores.into_iter().map(Score::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse_options;

    /// Scores a completion by its length; `unit` must be "chars".
    struct Length;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LengthOptions {
        #[allow(dead_code)]
        unit: String,
    }

    impl RewardPlugin for Length {
        fn info(&self) -> PluginInfo {
            PluginInfo::new("length", "1.0.0", "length in characters")
        }
        fn default_weight(&self) -> f32 {
            0.5
        }
        fn is_cheap(&self) -> bool {
            false
        }
        fn create(&self, options: &serde_json::Value) -> Result<Box<dyn RewardObjective>, PluginError> {
            parse_options::<LengthOptions>(options)?;
            Ok(Box::new(LengthObjective))
        }
    }

    struct LengthObjective;

    impl RewardObjective for LengthObjective {
        fn score_group(&self, request: &ScoreRequest<'_>) -> Result<Vec<Score>, PluginError> {
            if request.completions.contains(&"boom") {
                panic!("boom");
            }
            Ok(request
                .completions
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let tokens = request
                        .completion_ids
                        .get(i)
                        .map_or(-1.0, |ids| ids.iter().sum::<u32>() as f32);
                    Score::new(c.len() as f32)
                        .with("words", c.split_whitespace().count() as f32)
                        .with("token_sum", tokens)
                        .with_answer(c.split_whitespace().last())
                })
                .collect())
        }
    }

    /// Through both sides in one process, as a loaded library is used.
    #[test]
    fn a_reward_plugin_round_trips_with_typed_errors_and_answers() {
        let foreign = ForeignRewardPlugin(export_reward(Box::new(Length)));
        assert_eq!(foreign.info().name, "length");
        assert_eq!(foreign.default_weight(), 0.5);
        assert!(!foreign.is_cheap());
        let error = foreign.create(&serde_json::json!({"units": "x"})).err().unwrap();
        assert!(
            matches!(&error, PluginError::InvalidOption { option, .. } if option == "units"),
            "{error:?}"
        );
        let objective = foreign.create(&serde_json::json!({"unit": "chars"})).unwrap();
        let example = Example::default();
        let request = |completions: &'static [&'static str]| ScoreRequest::new(&example, "p", completions);
        let scores = objective.score_group(&request(&["so B", "x"])).unwrap();
        assert_eq!(
            scores[0],
            Score::new(4.0)
                .with("words", 2.0)
                .with("token_sum", -1.0)
                .with_answer(Some("B"))
        );
        assert_eq!(scores[1].answer.as_deref(), Some("x"));
        let ids = [vec![3, 4], vec![7]];
        let with_ids = objective
            .score_group(&request(&["so B", "x"]).with_completion_ids(&ids))
            .unwrap();
        assert_eq!(with_ids[0].diagnostics[1], ("token_sum".to_string(), 7.0));
        assert_eq!(with_ids[1].diagnostics[1], ("token_sum".to_string(), 7.0));
        let panicked = objective
            .score_group(&request(&["boom"]))
            .unwrap_err()
            .to_string();
        assert!(
            panicked.contains("score_group panicked at sdk/src/ffi/reward.rs:")
                && panicked.ends_with(": boom"),
            "{panicked}"
        );
    }
}
