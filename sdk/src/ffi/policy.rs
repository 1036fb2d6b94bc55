// `#[sabi_trait]` generates impls inside a const block, which this lint flags.
#![allow(non_local_definitions)]

//! Policy models across the boundary. Tensors cross as libtorch tensor handles (`usize`): the
//! caller lends a handle, which the callee shallow-clones (sharing storage and autograd graph);
//! a returned tensor is handed over and owned by the receiver. That is only sound when both
//! sides run the same libtorch build, which the host checks (`PluginLibrary::torch_version`)
//! before it calls anything here. Devices: -1 = CPU, n = cuda:n. Dtypes: see [`kind_code`].

use super::FfiPluginInfo;
use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, RResult, RStr, RString, RVec, Tuple2};

/// A loaded policy model, across the boundary.
#[sabi_trait]
pub trait FfiPolicyModel: Send {
    /// Logits handle for input-id and mask handles; `cache` 0 means none.
    fn forward(&self, input_ids: usize, attention_mask: usize, cache: u64) -> RResult<usize, RString>;
    fn new_cache(&self) -> u64;
    fn drop_cache(&self, cache: u64);
    /// Trainable parameters by name, as handles the host owns (shallow clones).
    fn parameters(&self) -> RVec<Tuple2<RString, usize>>;
    fn save(&self, dir: RStr<'_>) -> RResult<(), RString>;
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, RString>;
}

pub type FfiPolicyModelBox = FfiPolicyModel_TO<'static, RBox<()>>;

/// A policy plugin, across the boundary.
#[sabi_trait]
pub trait FfiPolicyPlugin: Send + Sync {
    fn info(&self) -> FfiPluginInfo;
    fn load(
        &self,
        dir: RStr<'_>,
        device: i64,
        kind: i32,
        options_json: RStr<'_>,
    ) -> RResult<FfiPolicyModelBox, RString>;
    #[sabi(last_prefix_field)]
    fn extension(&self, name: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, RString>;
}

pub type FfiPolicyPluginBox = FfiPolicyPlugin_TO<'static, RBox<()>>;

/// Dtype codes on the boundary.
pub fn kind_code(kind: &str) -> Option<i32> {
    match kind {
        "f32" => Some(0),
        "bf16" => Some(1),
        "f16" => Some(2),
        _ => None,
    }
}
