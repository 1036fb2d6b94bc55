//! Built-in plugins: compiled into the host and registered with `inventory`.
//!
//! `inventory` only sees crates that are linked, so the host names each built-in crate
//! (`use crpo_plugins_x as _;`). Dynamic libraries use the exported root module instead.

use crate::dataset::DatasetPlugin;
use crate::preset::RewardPreset;
use crate::reward::RewardPlugin;

/// One built-in plugin, submitted by [`crate::register_reward!`], [`crate::register_dataset!`]
/// or [`crate::register_preset!`].
pub enum BuiltinPlugin {
    Reward(&'static dyn RewardPlugin),
    Dataset(&'static dyn DatasetPlugin),
    Preset(&'static RewardPreset),
}

inventory::collect!(BuiltinPlugin);

/// Every built-in plugin linked into this binary.
pub fn builtin_plugins() -> impl Iterator<Item = &'static BuiltinPlugin> {
    inventory::iter::<BuiltinPlugin>.into_iter()
}

/// Registers a reward plugin (a `static` or a const expression) as built in:
/// `crpo_sdk::register_reward!(AccuracyPlugin);`
#[macro_export]
macro_rules! register_reward {
    ($plugin:expr) => {
        $crate::inventory::submit! { $crate::registry::BuiltinPlugin::Reward(&$plugin) }
    };
}

/// Registers a dataset plugin as built in: `crpo_sdk::register_dataset!(MedQaReader);`
#[macro_export]
macro_rules! register_dataset {
    ($plugin:expr) => {
        $crate::inventory::submit! { $crate::registry::BuiltinPlugin::Dataset(&$plugin) }
    };
}

/// Registers a reward preset as built in: `crpo_sdk::register_preset!(CRPO);`
#[macro_export]
macro_rules! register_preset {
    ($preset:expr) => {
        $crate::inventory::submit! { $crate::registry::BuiltinPlugin::Preset(&$preset) }
    };
}
