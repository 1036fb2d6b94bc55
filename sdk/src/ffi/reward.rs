// `#[sabi_trait]` generates impls inside a const block, which this lint flags.
#![allow(non_local_definitions)]

use super::panic::catch_panic;
use super::{exported_info, FfiPluginInfo};
use crate::example::Example;
use crate::reward::{RewardObjective, RewardPlugin, Score, ScoreRequest};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RBox, RResult, RSlice, RStr, RString, RVec, Tuple2};
use abi_stable::{sabi_trait, StableAbi};

/// A score as it crosses the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiScore {
    pub value: f32,
    pub diagnostics: RVec<Tuple2<RString, f32>>,
}

impl From<Score> for FfiScore {
    fn from(score: Score) -> Self {
        FfiScore {
            value: score.value,
            diagnostics: score
                .diagnostics
                .into_iter()
                .map(|(k, v)| Tuple2(k.into(), v))
                .collect(),
        }
    }
}

impl From<FfiScore> for Score {
    fn from(score: FfiScore) -> Self {
        Score {
            value: score.value,
            diagnostics: score
                .diagnostics
                .into_iter()
                .map(|Tuple2(k, v)| (k.into(), v))
                .collect(),
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
}

pub type FfiRewardObjectiveBox = FfiRewardObjective_TO<'static, RBox<()>>;

/// A reward plugin, across the boundary. Options are JSON.
#[sabi_trait]
pub trait FfiRewardPlugin: Send + Sync {
    fn info(&self) -> FfiPluginInfo;
    fn default_weight(&self) -> f32;
    fn create(&self, options_json: RStr<'_>) -> RResult<FfiRewardObjectiveBox, RString>;
    /// What later minor versions add, by name (see [`super::extension`]).
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, RString>;
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

    fn extension(&self, name: RStr<'_>, _request_json: RStr<'_>) -> RResult<RString, RString> {
        match name.as_str() {
            super::extension::REWARD_IS_CHEAP => {
                catch_panic("is_cheap", || Ok(self.0.is_cheap().to_string().into()))
            }
            other => RResult::RErr(super::extension::unknown(other)),
        }
    }

    fn create(&self, options_json: RStr<'_>) -> RResult<FfiRewardObjectiveBox, RString> {
        catch_panic("create", || {
            let options: serde_json::Value = serde_json::from_str(options_json.as_str())
                .map_err(|e| format!("options are not valid JSON: {e}"))?;
            let objective = self.0.create(&options).map_err(|e| e.to_string())?;
            Ok(FfiRewardObjective_TO::from_value(
                RewardObjectiveExport(objective),
                TD_Opaque,
            ))
        })
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
        catch_panic("score_group", || {
            let example: Example = serde_json::from_str(example_json.as_str())
                .map_err(|e| format!("example is not valid JSON: {e}"))?;
            let texts: Vec<&str> = completions.iter().map(|c| c.as_str()).collect();
            let request = ScoreRequest {
                example: &example,
                prompt: prompt.as_str(),
                completions: &texts,
            };
            let scores = self.0.score_group(&request).map_err(|e| e.to_string())?;
            Ok(scores.into_iter().map(FfiScore::from).collect())
        })
    }
}

/// Used by [`crate::export_plugin_library!`]: builds the exported reward plugins.
#[doc(hidden)]
pub fn export_rewards(
    make: impl FnOnce() -> Vec<Box<dyn RewardPlugin>>,
) -> RResult<RVec<FfiRewardPluginBox>, RString> {
    catch_panic("reward plugin constructor", || {
        Ok(make()
            .into_iter()
            .map(|p| FfiRewardPlugin_TO::from_value(RewardPluginExport(p), TD_Opaque))
            .collect())
    })
}
