//! The ABI-stable boundary (abi_stable) between the host and a plugin library (cdylib).
//!
//! One file per concept, each with both sides: `Ffi*` types are what crosses, `*Export`
//! adapters turn a plugin author's trait impls into them (catching panics on the way: a panic
//! must never unwind across `extern "C"`), and `Foreign*` adapters turn them back into the
//! sdk's traits for the host — each file tests the round trip in one process. Policy models'
//! adapters are in `crpo-policy-sdk` (they need libtorch). Examples cross as JSON so the sdk
//! can add fields to them in a minor version; vtables grow by typed methods after their
//! `last_prefix_field`, with defaults for libraries built before them.

mod dataset;
pub mod error;
pub mod extension;
mod panic;
pub mod policy;
mod reward;

pub use dataset::{
    export_datasets, FfiDatasetPlugin, FfiDatasetPluginBox, FfiDatasetPlugin_TO, ForeignDatasetPlugin,
};
pub use error::{FfiErrorKind, FfiPluginError};
pub use panic::{catch_panic, catch_panic_typed};
pub use policy::{FfiPolicyModelBox, FfiPolicyPluginBox};
pub use reward::{
    export_rewards, FfiAnsweredScore, FfiRewardObjective, FfiRewardObjectiveBox, FfiRewardObjective_TO,
    FfiRewardPlugin, FfiRewardPluginBox, FfiRewardPlugin_TO, FfiScore, ForeignRewardPlugin,
};

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, package_version_strings, StableAbi};

/// The name of the static every plugin library exports, as abi_stable's
/// `#[export_root_module]` would name it (asserted in a test below); the sdk's export macro
/// writes it out so that plugin crates need no direct abi_stable dependency.
#[doc(hidden)]
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// Name, version and description of one plugin.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct FfiPluginInfo {
    pub name: RString,
    pub version: RString,
    pub description: RString,
}

impl From<crate::PluginInfo> for FfiPluginInfo {
    fn from(info: crate::PluginInfo) -> Self {
        FfiPluginInfo {
            name: info.name.into(),
            version: info.version.into(),
            description: info.description.into(),
        }
    }
}

impl From<FfiPluginInfo> for crate::PluginInfo {
    fn from(info: FfiPluginInfo) -> Self {
        crate::PluginInfo {
            name: info.name.into(),
            version: info.version.into(),
            description: info.description.into(),
        }
    }
}

/// The name a plugin whose `info()` panicked is given (the panic's message its description):
/// no config can name it, and the host refuses its library.
pub const INFO_PANICKED: &str = "<info panicked>";

/// A plugin's info; a panic in `info()` cannot be returned as an error, so the name says so.
#[doc(hidden)]
pub fn exported_info(info: impl FnOnce() -> crate::PluginInfo) -> FfiPluginInfo {
    match catch_panic("info", || Ok(info())) {
        RResult::ROk(info) => info.into(),
        RResult::RErr(message) => FfiPluginInfo {
            name: INFO_PANICKED.into(),
            version: RString::new(),
            description: message,
        },
    }
}

/// The root module of a plugin library. A prefix type: a later minor version of the sdk may
/// add fields after the last prefix field, and the host reads them as `Option` from older
/// libraries, so plugins built against an older minor version keep loading.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginLibraryRef)))]
#[sabi(missing_field(option))]
pub struct PluginLibrary {
    /// The plugin library's own crate name and version.
    pub library_name: RStr<'static>,
    pub library_version: RStr<'static>,
    pub reward_plugins: extern "C" fn() -> RResult<RVec<FfiRewardPluginBox>, RString>,
    pub dataset_plugins: extern "C" fn() -> RResult<RVec<FfiDatasetPluginBox>, RString>,
    pub policy_plugins: extern "C" fn() -> RResult<RVec<FfiPolicyPluginBox>, RString>,
    /// The torch and tch versions the library was built with (empty for a library without
    /// policies). Tensor handles only cross between equal builds: the host checks both.
    pub torch_version: RStr<'static>,
    pub tch_series: RStr<'static>,
    /// What later minor versions add at the library level, by name (see [`extension`]).
    #[sabi(last_prefix_field)]
    pub extension: extern "C" fn(RStr<'_>, RStr<'_>) -> RResult<RString, RString>,
}

impl RootModule for PluginLibraryRef {
    declare_root_module_statics! {PluginLibraryRef}
    const BASE_NAME: &'static str = "crpo_plugin";
    const NAME: &'static str = "crpo plugin library";
    /// The sdk's crate version is the ABI version: a different major version is refused.
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

type PluginList<T> = extern "C" fn() -> RResult<RVec<T>, RString>;

/// The plugin lists a library exports.
#[doc(hidden)]
pub struct PluginLists {
    pub rewards: PluginList<FfiRewardPluginBox>,
    pub datasets: PluginList<FfiDatasetPluginBox>,
    pub policies: PluginList<FfiPolicyPluginBox>,
}

/// Used by [`crate::export_plugin_library!`] for a library without policies.
#[doc(hidden)]
pub extern "C" fn no_policies() -> RResult<RVec<FfiPolicyPluginBox>, RString> {
    RResult::ROk(RVec::new())
}

extern "C" fn library_extension(name: RStr<'_>, _request: RStr<'_>) -> RResult<RString, RString> {
    RResult::RErr(extension::unknown(name.as_str()))
}

/// The torch build a library's policies run on (both empty without policies).
#[doc(hidden)]
pub struct TorchBuild {
    pub torch_version: &'static str,
    pub tch_series: &'static str,
}

/// Used by [`crate::export_plugin_library!`]: the root module of the calling library.
#[doc(hidden)]
pub fn plugin_library(
    library_name: &'static str,
    library_version: &'static str,
    lists: PluginLists,
    torch: TorchBuild,
) -> PluginLibraryRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    let TorchBuild {
        torch_version,
        tch_series,
    } = torch;
    PluginLibrary {
        library_name: library_name.into(),
        library_version: library_version.into(),
        reward_plugins: lists.rewards,
        dataset_plugins: lists.datasets,
        policy_plugins: lists.policies,
        torch_version: torch_version.into(),
        tch_series: tch_series.into(),
        extension: library_extension,
    }
    .leak_into_prefix()
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_module_symbol_matches_abi_stable() {
        assert_eq!(
            super::ROOT_MODULE_SYMBOL,
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }
}
