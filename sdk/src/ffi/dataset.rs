// `#[sabi_trait]` generates impls inside a const block, which this lint flags.
#![allow(non_local_definitions)]

use super::panic::catch_panic;
use super::{exported_info, FfiPluginInfo};
use crate::dataset::{DatasetPlugin, DatasetSource};
use abi_stable::sabi_trait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RBox, RResult, RStr, RString, RVec};

/// A dataset plugin, across the boundary. The result is a JSON `DatasetRead`: reading is
/// done once per run, and JSON lets the example type grow in minor versions.
#[sabi_trait]
pub trait FfiDatasetPlugin: Send + Sync {
    fn info(&self) -> FfiPluginInfo;
    fn read(&self, path: RStr<'_>, options_json: RStr<'_>) -> RResult<RString, RString>;
    /// What later minor versions add, by name (see [`super::extension`]).
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, RString>;
}

pub type FfiDatasetPluginBox = FfiDatasetPlugin_TO<'static, RBox<()>>;

struct DatasetPluginExport(Box<dyn DatasetPlugin>);

impl FfiDatasetPlugin for DatasetPluginExport {
    fn info(&self) -> FfiPluginInfo {
        exported_info(|| self.0.info())
    }

    fn extension(&self, name: RStr<'_>, _request_json: RStr<'_>) -> RResult<RString, RString> {
        RResult::RErr(super::extension::unknown(name.as_str()))
    }

    fn read(&self, path: RStr<'_>, options_json: RStr<'_>) -> RResult<RString, RString> {
        catch_panic("read", || {
            let options = serde_json::from_str(options_json.as_str())
                .map_err(|e| format!("options are not valid JSON: {e}"))?;
            let source = DatasetSource {
                path: path.as_str().into(),
                options,
            };
            let read = self.0.read(&source).map_err(|e| e.to_string())?;
            serde_json::to_string(&read)
                .map(RString::from)
                .map_err(|e| e.to_string())
        })
    }
}

/// Used by [`crate::export_plugin_library!`]: builds the exported dataset plugins.
#[doc(hidden)]
pub fn export_datasets(
    make: impl FnOnce() -> Vec<Box<dyn DatasetPlugin>>,
) -> RResult<RVec<FfiDatasetPluginBox>, RString> {
    catch_panic("dataset plugin constructor", || {
        Ok(make()
            .into_iter()
            .map(|p| FfiDatasetPlugin_TO::from_value(DatasetPluginExport(p), TD_Opaque))
            .collect())
    })
}
