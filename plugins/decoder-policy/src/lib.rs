//! Built-in policy models: the Qwen2/Llama decoder family in tch, loaded from Hugging Face
//! model directories.

pub mod config;
pub mod error;
pub mod generation;
pub mod logprobs;
pub mod plugin;
pub mod policy;
pub mod qwen2;
pub mod tiny;
pub mod tokenizer;
pub mod weights;

#[cfg(test)]
mod qwen2_tests;
