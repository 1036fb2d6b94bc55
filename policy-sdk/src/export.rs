//! `export_plugin_library!` for libraries with policy models.

/// Exports the plugins of a cdylib crate — policy models among them — as an ABI-stable
/// library the host can load; the library records the torch build it links, and the host
/// refuses it on another:
///
/// ```ignore
/// crpo_policy_sdk::export_plugin_library! {
///     rewards: [],
///     datasets: [],
///     policies: [BigramPlugin],
/// }
/// ```
///
/// As `crpo_sdk::export_plugin_library!` otherwise (which libraries without policies use).
#[macro_export]
macro_rules! export_plugin_library {
    (rewards: [$($reward:expr),* $(,)?], datasets: [$($dataset:expr),* $(,)?], policies: [$($policy:expr),* $(,)?] $(,)?) => {
        extern "C" fn crpo_policy_plugins() -> $crate::sdk::abi_stable::std_types::RResult<
            $crate::sdk::abi_stable::std_types::RVec<$crate::sdk::ffi::FfiPolicyPluginBox>,
            $crate::sdk::abi_stable::std_types::RString,
        > {
            $crate::ffi::export_policies(|| {
                ::std::vec![$(::std::boxed::Box::new($policy) as ::std::boxed::Box<dyn $crate::PolicyPlugin>),*]
            })
        }
        $crate::sdk::export_plugin_library! {
            @library [$($reward),*] [$($dataset),*] crpo_policy_plugins,
            $crate::sdk::ffi::TorchBuild {
                torch_version: $crate::BUILT_TORCH_VERSION,
                tch_series: $crate::TCH_SERIES,
            }
        }
    };
}
