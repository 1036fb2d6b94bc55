//! The by-name channel of sdk 1.1–1.6, frozen.
//!
//! Before 1.4 a host refused a library whose vtables were shorter than its own, so a minor
//! version could not add a method without locking out every plugin built before it; each
//! plugin vtable has, from 1.0 on, one `extension(name, request_json) -> response_json` entry through which
//! 1.1 and 1.5 added capabilities by name (a library built before them answers [`unknown`]).
//! Since 1.4 minor versions add typed methods after each vtable's `last_prefix_field`
//! instead, and since 1.7 every capability the channel carried is also a typed method whose
//! default asks the channel, so libraries of those versions keep working. Libraries still
//! answer the names for hosts of those versions.

use abi_stable::std_types::RString;

/// 1.5–1.6, on policy models (a typed method since 1.7): `{"enabled": bool}` → `""`, or an
/// error when the model cannot (`PolicyModel::set_gradient_checkpointing`).
pub const POLICY_GRADIENT_CHECKPOINTING: &str = "policy.gradient_checkpointing";

/// 1.5–1.6, on policy models (a typed method since 1.7): `{"enabled": bool}` → `""`: LoRA
/// adapters on or off (`PolicyModel::set_adapters_enabled`).
pub const POLICY_ADAPTERS_ENABLED: &str = "policy.adapters_enabled";

/// Since 1.1, on reward plugins: `null` → `true` or `false` ([`crate::RewardPlugin::is_cheap`]).
pub const REWARD_IS_CHEAP: &str = "reward.is_cheap";

/// The request of an on/off extension.
pub fn switch_request(enabled: bool) -> &'static str {
    if enabled {
        r#"{"enabled":true}"#
    } else {
        r#"{"enabled":false}"#
    }
}

const UNKNOWN_PREFIX: &str = "unknown extension: ";

/// The answer of a library that does not know the extension `name`.
pub fn unknown(name: &str) -> RString {
    format!("{UNKNOWN_PREFIX}{name}").into()
}

/// Whether an extension error means "this library predates the extension".
pub fn is_unknown(error: &str) -> bool {
    error.starts_with(UNKNOWN_PREFIX)
}
