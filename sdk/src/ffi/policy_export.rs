//! Plugin side of policy models (feature `tch`): a plugin author's [`PolicyPlugin`] behind the
//! FFI traits, every entry point wrapped in `catch_unwind`.

use super::panic::catch_panic;
use super::policy::{
    FfiPolicyModel, FfiPolicyModelBox, FfiPolicyModel_TO, FfiPolicyPlugin, FfiPolicyPluginBox,
    FfiPolicyPlugin_TO,
};
use super::{exported_info, extension, FfiPluginInfo};
use crate::policy::{
    borrow_tensor, device_from_code, give_tensor, kind_from_code, CacheId, PolicyLoad, PolicyModel,
    PolicyPlugin,
};
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RStr, RString, RVec, Tuple2};
use std::path::Path;

struct PolicyPluginExport(Box<dyn PolicyPlugin>);

impl FfiPolicyPlugin for PolicyPluginExport {
    fn info(&self) -> FfiPluginInfo {
        exported_info(|| self.0.info())
    }

    fn load(
        &self,
        dir: RStr<'_>,
        device: i64,
        kind: i32,
        options_json: RStr<'_>,
    ) -> RResult<FfiPolicyModelBox, RString> {
        catch_panic("load", || {
            let options: serde_json::Value = serde_json::from_str(options_json.as_str())
                .map_err(|e| format!("options are not valid JSON: {e}"))?;
            let kind = kind_from_code(kind).map_err(|e| e.to_string())?;
            let request = PolicyLoad {
                dir: Path::new(dir.as_str()),
                device: device_from_code(device),
                kind,
                options: &options,
            };
            let model = self.0.load(&request).map_err(|e| e.to_string())?;
            Ok(FfiPolicyModel_TO::from_value(PolicyModelExport(model), TD_Opaque))
        })
    }

    fn extension(&self, name: RStr<'_>, _request_json: RStr<'_>) -> RResult<RString, RString> {
        RResult::RErr(extension::unknown(name.as_str()))
    }
}

struct PolicyModelExport(Box<dyn PolicyModel>);

impl FfiPolicyModel for PolicyModelExport {
    fn forward(&self, input_ids: usize, attention_mask: usize, cache: u64) -> RResult<usize, RString> {
        catch_panic("forward", || {
            // SAFETY: the host lends live tensors for this call, after checking that this
            // library runs on its libtorch build.
            let (ids, mask) = unsafe { (borrow_tensor(input_ids), borrow_tensor(attention_mask)) };
            let cache = (cache != 0).then_some(CacheId(cache));
            let logits = self.0.forward(&ids, &mask, cache).map_err(|e| e.to_string())?;
            Ok(give_tensor(logits))
        })
    }

    fn new_cache(&self) -> u64 {
        catch_panic("new_cache", || Ok(self.0.new_cache().0)).unwrap_or(0)
    }

    fn drop_cache(&self, cache: u64) {
        let _ = catch_panic("drop_cache", || {
            self.0.drop_cache(CacheId(cache));
            Ok(())
        });
    }

    fn parameters(&self) -> RVec<Tuple2<RString, usize>> {
        catch_panic("parameters", || {
            Ok(self
                .0
                .parameters()
                .into_iter()
                .map(|(name, t)| Tuple2(name.into(), give_tensor(t)))
                .collect())
        })
        .unwrap_or_default()
    }

    fn save(&self, dir: RStr<'_>) -> RResult<(), RString> {
        catch_panic("save", || {
            self.0.save(Path::new(dir.as_str())).map_err(|e| e.to_string())
        })
    }

    fn extension(&self, name: RStr<'_>, _request_json: RStr<'_>) -> RResult<RString, RString> {
        RResult::RErr(extension::unknown(name.as_str()))
    }
}

/// Used by [`crate::export_plugin_library!`]: builds the exported policy plugins.
#[doc(hidden)]
pub fn export_policies(
    make: impl FnOnce() -> Vec<Box<dyn PolicyPlugin>>,
) -> RResult<RVec<FfiPolicyPluginBox>, RString> {
    catch_panic("policy plugin constructor", || {
        Ok(make()
            .into_iter()
            .map(|p| FfiPolicyPlugin_TO::from_value(PolicyPluginExport(p), TD_Opaque))
            .collect())
    })
}
