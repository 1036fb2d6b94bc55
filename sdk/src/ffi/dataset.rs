// `#[sabi_trait]` generates impls inside a const block, which this lint flags.
#![allow(non_local_definitions)]

//! Dataset plugins across the boundary: what crosses (`FfiDatasetPlugin`), the plugin side
//! (`DatasetPluginExport`) and the host side (`ForeignDatasetPlugin`). The result crosses as a
//! JSON `DatasetRead`: reading is done once per run, and JSON lets the example type grow in
//! minor versions.

use super::error::FfiPluginError;
use super::panic::{catch_panic, catch_panic_typed};
use super::{exported_info, extension, FfiPluginInfo};
use crate::dataset::{DatasetPlugin, DatasetRead, DatasetSource};
use crate::error::PluginError;
use crate::PluginInfo;
use abi_stable::sabi_trait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RBox, RResult, RStr, RString, RVec};

#[sabi_trait]
pub trait FfiDatasetPlugin: Send + Sync {
    fn info(&self) -> FfiPluginInfo;
    fn read(&self, path: RStr<'_>, options_json: RStr<'_>) -> RResult<RString, RString>;
    /// The by-name channel of sdk 1.1–1.3 (see [`super::extension`]); frozen since 1.4.
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, RString>;

    /// Since 1.4: `read` with a typed error (an invalid option keeps its name).
    fn read_typed(&self, path: RStr<'_>, options_json: RStr<'_>) -> RResult<RString, FfiPluginError> {
        self.read(path, options_json).map_err(FfiPluginError::failed)
    }
}

pub type FfiDatasetPluginBox = FfiDatasetPlugin_TO<'static, RBox<()>>;

struct DatasetPluginExport(Box<dyn DatasetPlugin>);

impl FfiDatasetPlugin for DatasetPluginExport {
    fn info(&self) -> FfiPluginInfo {
        exported_info(|| self.0.info())
    }

    fn read(&self, path: RStr<'_>, options_json: RStr<'_>) -> RResult<RString, RString> {
        self.read_typed(path, options_json)
            .map_err(|e| PluginError::from(e).to_string().into())
    }

    fn extension(&self, name: RStr<'_>, _request_json: RStr<'_>) -> RResult<RString, RString> {
        RResult::RErr(extension::unknown(name.as_str()))
    }

    fn read_typed(&self, path: RStr<'_>, options_json: RStr<'_>) -> RResult<RString, FfiPluginError> {
        catch_panic_typed("read", || {
            let options = serde_json::from_str(options_json.as_str())
                .map_err(|e| PluginError::failed(format!("options are not valid JSON: {e}")))?;
            let source = DatasetSource {
                path: path.as_str().into(),
                options,
            };
            let read = self.0.read(&source)?;
            serde_json::to_string(&read)
                .map(RString::from)
                .map_err(PluginError::failed)
        })
    }
}

/// Used by [`crate::export_plugin_library!`]: builds the exported dataset plugins.
#[doc(hidden)]
pub fn export_datasets(
    make: impl FnOnce() -> Vec<Box<dyn DatasetPlugin>>,
) -> RResult<RVec<FfiDatasetPluginBox>, RString> {
    catch_panic("dataset plugin constructor", || {
        Ok(make().into_iter().map(export_dataset).collect())
    })
}

fn export_dataset(plugin: Box<dyn DatasetPlugin>) -> FfiDatasetPluginBox {
    FfiDatasetPlugin_TO::from_value(DatasetPluginExport(plugin), TD_Opaque)
}

/// Host side: a dataset plugin from a library, behind the sdk trait.
pub struct ForeignDatasetPlugin(pub FfiDatasetPluginBox);

impl DatasetPlugin for ForeignDatasetPlugin {
    fn info(&self) -> PluginInfo {
        self.0.info().into()
    }

    fn read(&self, source: &DatasetSource) -> Result<DatasetRead, PluginError> {
        let path = source.path.to_string_lossy();
        let options = source.options.to_string();
        let json = self
            .0
            .read_typed(RStr::from_str(&path), RStr::from_str(&options))
            .into_result()
            .map_err(PluginError::from)?;
        serde_json::from_str(json.as_str())
            .map_err(|e| PluginError::failed(format!("returned an unreadable dataset: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RecordError;
    use crate::options::parse_options;
    use crate::Example;

    /// One example per line of the path's text; `strict` refuses the path "bad".
    struct Lines;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LinesOptions {
        #[serde(default)]
        strict: bool,
    }

    impl DatasetPlugin for Lines {
        fn info(&self) -> PluginInfo {
            PluginInfo::new("lines", "1.0.0", "one example per line")
        }
        fn read(&self, source: &DatasetSource) -> Result<DatasetRead, PluginError> {
            let options: LinesOptions = parse_options(&source.options)?;
            let path = source.path.to_string_lossy();
            if options.strict && path == "bad" {
                return Err(PluginError::MalformedRecord(RecordError {
                    file: "bad".into(),
                    line: 3,
                    field: "question".into(),
                    message: "missing".into(),
                }));
            }
            Ok(DatasetRead {
                examples: path
                    .split('|')
                    .map(|id| Example {
                        id: id.into(),
                        ..Example::default()
                    })
                    .collect(),
                malformed: Vec::new(),
            })
        }
    }

    #[test]
    fn a_dataset_plugin_round_trips_with_typed_errors() {
        let foreign = ForeignDatasetPlugin(export_dataset(Box::new(Lines)));
        assert_eq!(foreign.info().name, "lines");
        let source = |path: &str, options: serde_json::Value| DatasetSource {
            path: path.into(),
            options,
        };
        let read = foreign.read(&source("a|b", serde_json::Value::Null)).unwrap();
        assert_eq!(read.examples.len(), 2);
        let unknown = foreign.read(&source("a", serde_json::json!({"strict": true, "x": 1})));
        assert!(matches!(unknown, Err(PluginError::InvalidOption { ref option, .. }) if option == "x"));
        let malformed = foreign
            .read(&source("bad", serde_json::json!({"strict": true})))
            .unwrap_err();
        assert_eq!(malformed.to_string(), "bad:3: field `question`: missing");
    }
}
