//! `export_plugin_library!`: what a plugin crate writes to become a loadable library.

/// Exports the plugins of a cdylib crate as an ABI-stable library the host can load:
///
/// ```ignore
/// crpo_sdk::export_plugin_library! {
///     rewards: [ContraindicationSafety],
///     datasets: [],
/// }
/// ```
///
/// Each entry is an expression building a plugin value. The library's name and version are
/// the crate's own (`CARGO_PKG_NAME`, `CARGO_PKG_VERSION`). Every entry point is wrapped in
/// `catch_unwind`, so a panicking plugin fails the call with an error instead of aborting.
/// Use it once, at the crate root, in a crate with `crate-type = ["cdylib"]`. A library with
/// policy models uses `crpo_policy_sdk::export_plugin_library!` instead, which also takes
/// `policies: [...]`.
#[macro_export]
macro_rules! export_plugin_library {
    (rewards: [$($reward:expr),* $(,)?], datasets: [$($dataset:expr),* $(,)?] $(,)?) => {
        $crate::export_plugin_library! {
            @library [$($reward),*] [$($dataset),*] $crate::ffi::no_policies,
            $crate::ffi::TorchBuild { torch_version: "", tch_series: "" }
        }
    };
    (@library [$($reward:expr),*] [$($dataset:expr),*] $policies:path, $torch:expr) => {
        // The same static abi_stable's `#[export_root_module]` emits (see ffi::ROOT_MODULE_SYMBOL).
        #[doc(hidden)]
        #[unsafe(export_name = "_1as_0lib_1header_0root_bmodule_bloader")]
        pub static CRPO_PLUGIN_LIBRARY_HEADER: $crate::abi_stable::library::LibHeader = {
            extern "C" fn reward_plugins() -> $crate::abi_stable::std_types::RResult<
                $crate::abi_stable::std_types::RVec<$crate::ffi::FfiRewardPluginBox>,
                $crate::abi_stable::std_types::RString,
            > {
                $crate::ffi::export_rewards(|| {
                    ::std::vec![$(::std::boxed::Box::new($reward) as ::std::boxed::Box<dyn $crate::RewardPlugin>),*]
                })
            }
            extern "C" fn dataset_plugins() -> $crate::abi_stable::std_types::RResult<
                $crate::abi_stable::std_types::RVec<$crate::ffi::FfiDatasetPluginBox>,
                $crate::abi_stable::std_types::RString,
            > {
                $crate::ffi::export_datasets(|| {
                    ::std::vec![$(::std::boxed::Box::new($dataset) as ::std::boxed::Box<dyn $crate::DatasetPlugin>),*]
                })
            }
            fn root_module() -> $crate::ffi::PluginLibraryRef {
                $crate::ffi::plugin_library(
                    ::std::env!("CARGO_PKG_NAME"),
                    ::std::env!("CARGO_PKG_VERSION"),
                    $crate::ffi::PluginLists { rewards: reward_plugins, datasets: dataset_plugins, policies: $policies },
                    $torch,
                )
            }
            extern "C" fn erased_root_module() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader(root_module)
            }
            // SAFETY: this is what `#[export_root_module]` expands to, for the module type
            // that `root_module` returns.
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::ffi::PluginLibraryRef>(
                    erased_root_module,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}
