//! Fixed shapes for a decode step the engine captures as a CUDA graph.
//!
//! A captured step replays the same kernels on the same addresses with the same shapes, so
//! nothing in it may depend on a host value that changes from step to step. In this mode the
//! position a forward writes is a device tensor (the cursor) that the forward itself
//! advances; keys, values and the key mask are written at it with `index_copy_`; and
//! attention reads a fixed window of the cache (its first `window` positions, a mask hiding
//! those not written yet) instead of the positions written so far. Positions and masks come
//! out equal to [`super::KvCache`]'s ordinary mode, and so do the logits (up to the order of
//! floating-point sums over the longer, masked key range).

use super::{attention_mask, real_positions, CacheStep};
use tch::{Kind, Tensor};

#[derive(Debug)]
pub(crate) struct FixedShapes {
    /// `[1]` int64 on the cache's device: the first position the next forward writes.
    cursor: Tensor,
    /// Attention reads the cache's first `window` positions.
    pub window: i64,
    /// `[t]` int64: the positions the forward in progress writes.
    writing: Option<Tensor>,
}

impl FixedShapes {
    /// Fixed shapes from position `len` on, attention reading `window` positions.
    pub fn new(len: i64, window: i64, device: tch::Device) -> Self {
        FixedShapes {
            cursor: Tensor::from_slice(&[len]).to_device(device),
            window,
            writing: None,
        }
    }

    /// The same cursor (shared storage: a step through either advances both) and window.
    pub fn share(&self) -> Self {
        FixedShapes {
            cursor: self.cursor.shallow_clone(),
            window: self.window,
            writing: None,
        }
    }

    /// Writes the 0/1 `mask` `[B, t]` of `t` new positions into `key_mask` (bool
    /// `[B, capacity]`) at the cursor, advances the cursor, and returns the new positions'
    /// rotary positions and their attention mask over the window, `[B, 1, t, window]`.
    pub fn extend(&mut self, key_mask: &Tensor, mask: &Tensor) -> CacheStep {
        let device = key_mask.device();
        let t = mask.size()[1];
        let writing = &self.cursor + Tensor::arange(t, (Kind::Int64, device));
        let _ = key_mask
            .shallow_clone()
            .index_copy_(1, &writing, &mask.to_kind(Kind::Bool));
        let _ = self.cursor.g_add_scalar_(t);
        let window_mask = key_mask.narrow(1, 0, self.window);
        let step = CacheStep {
            positions: real_positions(&window_mask).index_select(1, &writing),
            attention_mask: attention_mask(&window_mask, &writing),
        };
        self.writing = Some(writing);
        step
    }

    /// Writes the new positions' `keys` and `values` (`[B, kv_heads, t, head_dim]`) into a
    /// layer's cache tensors and returns the window of each.
    pub fn store(&self, (k, v): (&Tensor, &Tensor), keys: &Tensor, values: &Tensor) -> (Tensor, Tensor) {
        let writing = self
            .writing
            .as_ref()
            .expect("a layer stores keys and values after its forward extended the cache");
        let _ = k.shallow_clone().index_copy_(2, writing, keys);
        let _ = v.shallow_clone().index_copy_(2, writing, values);
        (k.narrow(2, 0, self.window), v.narrow(2, 0, self.window))
    }
}
