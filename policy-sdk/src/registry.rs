//! Built-in policy plugins: compiled into the host and registered with `inventory`, as
//! `crpo_sdk::registry` does for rewards and datasets.

use crate::model::PolicyPlugin;

/// One built-in policy plugin, submitted by [`crate::register_policy!`].
pub struct BuiltinPolicy(pub &'static dyn PolicyPlugin);

inventory::collect!(BuiltinPolicy);

/// Every built-in policy plugin linked into this binary.
pub fn builtin_policies() -> impl Iterator<Item = &'static dyn PolicyPlugin> {
    inventory::iter::<BuiltinPolicy>.into_iter().map(|p| p.0)
}

/// Registers a policy plugin as built in: `crpo_policy_sdk::register_policy!(Qwen2Plugin);`
#[macro_export]
macro_rules! register_policy {
    ($plugin:expr) => {
        $crate::inventory::submit! { $crate::registry::BuiltinPolicy(&$plugin) }
    };
}
