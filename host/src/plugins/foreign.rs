//! The host's view of plugins loaded from a library: the sdk's traits over the FFI types,
//! so the trainer cannot tell a loaded plugin from a built-in one.

use abi_stable::std_types::Tuple2;
use abi_stable::std_types::{RResult, RStr};
use crpo_sdk::ffi::extension;
use crpo_sdk::ffi::policy::kind_code;
use crpo_sdk::ffi::{FfiDatasetPluginBox, FfiRewardObjectiveBox, FfiRewardPluginBox, FfiScore};
use crpo_sdk::ffi::{FfiPolicyModelBox, FfiPolicyPluginBox};
use crpo_sdk::policy::{
    device_code, kind_name, lend_tensor, take_tensor, CacheId, PolicyLoad, PolicyModel, PolicyPlugin,
};
use crpo_sdk::{
    DatasetPlugin, DatasetRead, DatasetSource, PluginError, PluginInfo, RewardObjective, RewardPlugin, Score,
    ScoreRequest,
};
use tch::Tensor;

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

pub struct ForeignPolicyPlugin(pub FfiPolicyPluginBox);

impl PolicyPlugin for ForeignPolicyPlugin {
    fn info(&self) -> PluginInfo {
        self.0.info().into()
    }

    fn load(&self, request: &PolicyLoad<'_>) -> Result<Box<dyn PolicyModel>, PluginError> {
        let dir = request.dir.to_string_lossy();
        let kind = kind_code(kind_name(request.kind)?).expect("every named kind has a code");
        let options = request.options.to_string();
        let model = ffi_result(self.0.load(
            RStr::from_str(&dir),
            device_code(request.device),
            kind,
            RStr::from_str(&options),
        ))?;
        Ok(Box::new(ForeignPolicyModel(model)))
    }
}

/// Tensors cross as handles; the loader has checked that the library runs on this libtorch.
struct ForeignPolicyModel(FfiPolicyModelBox);

impl PolicyModel for ForeignPolicyModel {
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        cache: Option<CacheId>,
    ) -> Result<Tensor, PluginError> {
        let handle = ffi_result(self.0.forward(
            lend_tensor(input_ids),
            lend_tensor(attention_mask),
            cache.map_or(0, |c| c.0),
        ))?;
        // SAFETY: the plugin handed this tensor over (give_tensor) and it is taken once.
        Ok(unsafe { take_tensor(handle) })
    }

    fn new_cache(&self) -> CacheId {
        CacheId(self.0.new_cache())
    }

    fn drop_cache(&self, cache: CacheId) {
        self.0.drop_cache(cache.0)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        // SAFETY: each handle was handed over by the plugin and is taken once.
        self.0
            .parameters()
            .into_iter()
            .map(|Tuple2(name, handle)| (name.into(), unsafe { take_tensor(handle) }))
            .collect()
    }

    fn save(&self, dir: &std::path::Path) -> Result<(), PluginError> {
        ffi_result(self.0.save(RStr::from_str(&dir.to_string_lossy())))
    }
}
