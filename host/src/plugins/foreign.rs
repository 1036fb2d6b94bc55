//! The host's view of plugins loaded from a library: the sdk's traits over the FFI types,
//! so the trainer cannot tell a loaded plugin from a built-in one.

use abi_stable::std_types::{RResult, RStr};
use crpo_sdk::ffi::extension;
use crpo_sdk::ffi::{FfiDatasetPluginBox, FfiRewardObjectiveBox, FfiRewardPluginBox, FfiScore};
use crpo_sdk::{
    DatasetPlugin, DatasetRead, DatasetSource, PluginError, PluginInfo, RewardObjective, RewardPlugin, Score,
    ScoreRequest,
};

fn ffi_result<T>(result: RResult<T, abi_stable::std_types::RString>) -> Result<T, PluginError> {
    result
        .into_result()
        .map_err(|message| PluginError::Failed(message.into()))
}

pub struct ForeignRewardPlugin(pub FfiRewardPluginBox);

impl RewardPlugin for ForeignRewardPlugin {
    fn info(&self) -> PluginInfo {
        self.0.info().into()
    }

    fn default_weight(&self) -> f32 {
        self.0.default_weight()
    }

    /// Libraries built before sdk 1.1 do not know the extension and get the default.
    fn is_cheap(&self) -> bool {
        let answer = self
            .0
            .extension(RStr::from_str(extension::REWARD_IS_CHEAP), RStr::from_str("null"));
        match answer.into_result() {
            Ok(json) => json.as_str() != "false",
            Err(error) if extension::is_unknown(error.as_str()) => true,
            Err(error) => {
                tracing::warn!(
                    "reward plugin `{}`: is_cheap failed ({error}); assuming cheap",
                    self.info().name
                );
                true
            }
        }
    }

    fn create(&self, options: &serde_json::Value) -> Result<Box<dyn RewardObjective>, PluginError> {
        let options = options.to_string();
        let objective = ffi_result(self.0.create(RStr::from_str(&options)))?;
        Ok(Box::new(ForeignRewardObjective(objective)))
    }
}

struct ForeignRewardObjective(FfiRewardObjectiveBox);

impl RewardObjective for ForeignRewardObjective {
    fn score_group(&self, request: &ScoreRequest<'_>) -> Result<Vec<Score>, PluginError> {
        let example = serde_json::to_string(request.example).map_err(PluginError::failed)?;
        let completions: Vec<RStr<'_>> = request.completions.iter().map(|c| RStr::from_str(c)).collect();
        let scores = ffi_result(self.0.score_group(
            RStr::from_str(&example),
            RStr::from_str(request.prompt),
            completions.as_slice().into(),
        ))?;
        Ok(scores.into_iter().map(|s: FfiScore| s.into()).collect())
    }
}

pub struct ForeignDatasetPlugin(pub FfiDatasetPluginBox);

impl DatasetPlugin for ForeignDatasetPlugin {
    fn info(&self) -> PluginInfo {
        self.0.info().into()
    }

    fn read(&self, source: &DatasetSource) -> Result<DatasetRead, PluginError> {
        let path = source.path.to_string_lossy();
        let options = source.options.to_string();
        let json = ffi_result(self.0.read(RStr::from_str(&path), RStr::from_str(&options)))?;
        serde_json::from_str(json.as_str())
            .map_err(|e| PluginError::failed(format!("returned an unreadable dataset: {e}")))
    }
}
