//! The rollout engine: everything between a policy plugin's forward passes and the trainer,
//! written once over `&dyn PolicyModel` — chat templating and tokenizing, batched sampling
//! over a key/value cache the engine allocates, stopping, and the log-prob and entropy passes.
//! A policy plugin provides config, weights and forward passes, and nothing else.

pub mod fixed_shape_steps;
pub mod generation;
pub mod logprobs;
pub mod padding;
pub mod policy;
pub mod sampling;
pub mod tokenizer;

pub use policy::Policy;
