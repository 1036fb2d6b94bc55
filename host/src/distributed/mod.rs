//! Data-parallel CRPO across processes, GPUs and machines on libtorch's own c10d (Gloo on
//! CPU, NCCL on CUDA): how a run is launched ([`launch`]), this process's group and its
//! guarded collectives ([`world`]), that every rank runs the same config ([`same_config`]), who does which share of a step ([`shard`]) and how the
//! replicas start identical ([`replicas`]). docs/distributed.md is the user's view.

pub mod launch;
pub mod replicas;
pub mod same_config;
pub mod shard;
pub mod world;

pub use launch::LaunchEnv;
pub use world::World;

use crpo_torch_ext::c10d::Backend;
use std::time::Duration;
use tch::Device;

/// Joins the run the environment describes (RANK, WORLD_SIZE, …), if any: Gloo when the
/// policy runs on the CPU, NCCL on CUDA.
pub fn join_from_env(device: Device, timeout: Duration) -> anyhow::Result<Option<World>> {
    let Some(env) = LaunchEnv::from_env()? else {
        return Ok(None);
    };
    let backend = if device.is_cuda() {
        Backend::Nccl
    } else {
        Backend::Gloo
    };
    World::join(&env, backend, timeout).map(Some)
}
