//! How the ABI grows within a major version.
//!
//! abi_stable checks every type's layout at load time and refuses a library whose vtable has
//! fewer entries than the host's, so a minor version cannot add a method to a vtable without
//! locking out every plugin built before it. Instead each plugin vtable has, from 1.0 on, one
//! `extension(name, request_json) -> response_json` entry: a minor version adds capabilities
//! by name, and a library built before them answers [`unknown`], which the host reads as "use
//! the default". A major version folds the extensions into the typed vtables.

use abi_stable::std_types::RString;

/// Since 1.5, on policy models: `{"enabled": bool}` → `""`, or an error when the model
/// cannot (`PolicyModel::set_gradient_checkpointing`).
pub const POLICY_GRADIENT_CHECKPOINTING: &str = "policy.gradient_checkpointing";

/// Since 1.5, on policy models: `{"enabled": bool}` → `""`: LoRA adapters on or off
/// (`PolicyModel::set_adapters_enabled`).
pub const POLICY_ADAPTERS_ENABLED: &str = "policy.adapters_enabled";

/// Since 1.1, on reward plugins: `null` → `true` or `false` ([`crate::RewardPlugin::is_cheap`]).
pub const REWARD_IS_CHEAP: &str = "reward.is_cheap";

const UNKNOWN_PREFIX: &str = "unknown extension: ";

/// The answer of a library that does not know the extension `name`.
pub fn unknown(name: &str) -> RString {
    format!("{UNKNOWN_PREFIX}{name}").into()
}

/// Whether an extension error means "this library predates the extension".
pub fn is_unknown(error: &str) -> bool {
    error.starts_with(UNKNOWN_PREFIX)
}
