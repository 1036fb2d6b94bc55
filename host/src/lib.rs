//! # crpo-host — the crpo runtime
//!
//! The plugin runtime (built-in and loaded plugins behind the sdk traits), the commands of
//! the `crpo-host` binary, the rollout engine and the CRPO trainer.

pub mod atomic_file;
pub mod attention_backend;
pub mod commands;
pub mod control_chars;
pub mod demo_task;
pub mod device;
pub mod distributed;
pub mod error_report;
pub mod exit_guard;
pub mod home_path;
pub mod interrupt;
pub mod memory;
pub mod memory_stats;
pub mod model_output;
pub mod plugins;
pub mod report;
pub mod rollout;
pub mod text_table;
pub mod torch_info;
pub mod train;
pub mod warn_once;

// Built-in plugin crates register themselves with `inventory`; naming them here keeps the
// linker from dropping their registrations.
use crpo_plugins_datasets as _;
use crpo_plugins_policy as _;
use crpo_plugins_rewards as _;
