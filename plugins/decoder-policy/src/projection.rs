//! A linear layer of the decoder with its optional LoRA adapter (`crpo_policy_sdk::lora`):
//! `W·x (+ b) + s·B·(A·x)` while the model's adapters are on.

use crate::packed::PackedWeight;
use crpo_policy_sdk::lora::{LoraAdapter, LoraConfig};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tch::{nn, Tensor};

#[derive(Debug)]
pub struct Projection {
    pub linear: nn::Linear,
    pub adapter: Option<LoraAdapter>,
    /// The weight packed for decoding on the CPU, while decoding (crate::packed).
    packed: PackedWeight,
}

impl Projection {
    pub fn new(linear: nn::Linear) -> Self {
        Projection {
            linear,
            adapter: None,
            packed: PackedWeight::default(),
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let out = self.packed.project(&self.linear.ws, self.linear.bs.as_ref(), xs);
        match self.adapter.as_ref().and_then(|adapter| adapter.delta(xs)) {
            Some(delta) => out + delta,
            None => out,
        }
    }

    /// Gives this layer (named `module`) a fresh adapter when `config` targets it; returns its
    /// matrices by PEFT name.
    pub fn attach(
        &mut self,
        module: &str,
        config: &LoraConfig,
        enabled: &Arc<AtomicBool>,
    ) -> Vec<(String, Tensor)> {
        if !config.targets(module) {
            return Vec::new();
        }
        let [outputs, inputs] = self.linear.ws.size()[..] else {
            return Vec::new();
        };
        let weight = &self.linear.ws;
        let adapter = LoraAdapter::fresh(
            module,
            (inputs, outputs),
            config,
            (weight.kind(), weight.device()),
            enabled.clone(),
        );
        let named = vec![
            (
                crpo_policy_sdk::lora::peft_name(module, "lora_A"),
                adapter.a.shallow_clone(),
            ),
            (
                crpo_policy_sdk::lora::peft_name(module, "lora_B"),
                adapter.b.shallow_clone(),
            ),
        ];
        self.adapter = Some(adapter);
        named
    }

    /// The layer over the same tensors (a checkpointed layer keeps one for its backward).
    pub fn shallow_clone(&self) -> Self {
        Projection {
            linear: nn::Linear {
                ws: self.linear.ws.shallow_clone(),
                bs: self.linear.bs.as_ref().map(Tensor::shallow_clone),
            },
            adapter: self.adapter.as_ref().map(LoraAdapter::shallow_clone),
            packed: self.packed.clone(),
        }
    }
}
