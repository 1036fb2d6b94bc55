//! Which kernel libtorch's scaled-dot-product attention picks for the shapes the decoder
//! runs (grouped-query heads, a boolean key mask), so `doctor` and the benchmarks can say
//! whether a fused kernel (flash, memory-efficient, cuDNN) or the unfused math path runs.

use tch::{Device, Kind, Tensor};

/// libtorch's `SDPBackend` numbering (`at::_fused_sdp_choice`).
pub fn backend_name(choice: i64) -> &'static str {
    match choice {
        0 => "math (unfused)",
        1 => "flash attention",
        2 => "memory-efficient attention",
        3 => "cuDNN attention",
        4 => "overrideable (device backend)",
        _ => "none (no kernel accepts these inputs)",
    }
}

/// The kernel for `query_len` queries over `key_len` keys, `heads` query heads sharing
/// `kv_heads` key/value heads of `head_dim`, in `kind` on `device`, with a boolean mask (as
/// the decoder calls it: left padding and finished rows make the mask necessary).
pub fn choice(
    device: Device,
    kind: Kind,
    (heads, kv_heads, head_dim): (i64, i64, i64),
    (query_len, key_len): (i64, i64),
) -> Result<&'static str, tch::TchError> {
    let _guard = tch::no_grad_guard();
    let q = Tensor::zeros([1, heads, query_len, head_dim], (kind, device));
    let kv = Tensor::zeros([1, kv_heads, key_len, head_dim], (kind, device));
    let mask = Tensor::ones([1, 1, query_len, key_len], (Kind::Bool, device));
    let choice =
        Tensor::f_internal_fused_sdp_choice(&q, &kv, &kv, Some(&mask), 0.0, false, None, heads != kv_heads)?;
    Ok(backend_name(choice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_picks_a_kernel_for_the_decoder_s_shapes() {
        // Qwen2.5-0.5B's heads: a prefill and a decode step.
        for lengths in [(128, 128), (1, 1024)] {
            let name = choice(Device::Cpu, Kind::Float, (14, 2, 64), lengths).unwrap();
            assert!(!name.starts_with("none"), "{lengths:?}: {name}");
        }
    }
}
