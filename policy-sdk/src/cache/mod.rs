//! The keys and values attention layers keep of the positions they have seen.
//!
//! The engine owns the cache of a generation: it allocates a [`KvCache`] for the batch from
//! the model's [`CacheLayout`] and the prompt and completion budgets, hands it to every
//! `forward_cached` call, and drops finished rows from it. A model only writes the new
//! positions' keys and values in place and reads the ones before them, through
//! [`KeyValues`]. Training passes (`forward_continuations`) use a [`GrowingKvCache`], which
//! concatenates instead, so gradients flow through the shared prompt's keys and values.
//!
//! Both compute positions and the attention mask one way ([`KeyValues::extend`]): a position
//! counts the real tokens before it, so a left-padded row gets exactly the logits it would get
//! alone; a query sees every real key at or before it, and always itself, so no row is fully
//! masked and padding rows stay finite.

mod fixed_shapes;

use crpo_sdk::{PluginError, Result};
use fixed_shapes::FixedShapes;
use tch::{Device, Kind, Tensor};

/// The shape of a model's key/value cache: what the engine allocates for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLayout {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// What one forward over `t` new positions needs from its cache.
#[derive(Debug)]
pub struct CacheStep {
    /// The rotary position of each new token, `[B, t]` int64: the real tokens before it.
    pub positions: Tensor,
    /// `[B, 1, t, len + t]` bool: whether new query `i` may attend key `j`.
    pub attention_mask: Tensor,
}

/// Where a forward pass keeps the keys and values of the positions it has seen.
pub trait KeyValues {
    /// Positions held, padding included.
    fn len(&self) -> i64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Starts a forward over `t` new positions whose 0/1 `mask` `[B, t]` marks real tokens.
    fn extend(&mut self, mask: &Tensor) -> Result<CacheStep>;
    /// Stores layer `layer`'s keys and values of the new positions (`[B, kv_heads, t, head_dim]`
    /// each) and returns every position's so far.
    fn store(&mut self, layer: usize, keys: &Tensor, values: &Tensor) -> (Tensor, Tensor);
    /// Keeps row `rows[i]` as row `i` (`rows` int64 `[N]`).
    fn select_rows(&mut self, rows: &Tensor);
}

/// Positions and attention mask of `t` new positions after `past` ones, from the key mask of
/// all `past + t` (bool `[B, past + t]`).
fn step(key_mask: &Tensor, past: i64, t: i64) -> CacheStep {
    let query_pos = Tensor::arange_start(past, past + t, (Kind::Int64, key_mask.device()));
    CacheStep {
        positions: real_positions(key_mask).narrow(1, past, t),
        attention_mask: attention_mask(key_mask, &query_pos),
    }
}

/// The rotary position of every cache position (bool key mask `[B, K]`): the real tokens
/// before it.
fn real_positions(key_mask: &Tensor) -> Tensor {
    (key_mask.to_kind(Kind::Int64).cumsum(1, Kind::Int64) - 1).clamp_min(0)
}

/// `[B, 1, t, K]` bool: whether the queries at cache positions `query_pos` (`[t]` int64) may
/// attend each of the `K` keys of `key_mask`: real keys at or before them, and themselves.
fn attention_mask(key_mask: &Tensor, query_pos: &Tensor) -> Tensor {
    let keys = key_mask.size()[1];
    let query_pos = query_pos.view([-1, 1]);
    let key_pos = Tensor::arange(keys, (Kind::Int64, key_mask.device())).view([1, keys]);
    let causal = key_pos.le_tensor(&query_pos);
    let itself = key_pos.eq_tensor(&query_pos);
    causal
        .unsqueeze(0)
        .logical_and(&key_mask.unsqueeze(1))
        .logical_or(&itself.unsqueeze(0))
        .unsqueeze(1)
}

/// An engine-owned cache: per layer keys and values `[B, kv_heads, capacity, head_dim]` in the
/// model's dtype, allocated once and written in place, so a decode step copies nothing it
/// does not add.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    /// `[B, capacity]` bool: positions holding a real token.
    key_mask: Tensor,
    len: i64,
    /// First position of the forward in progress.
    start: i64,
    /// Set for a model that keeps its own cache (a library built before sdk 1.4): its id.
    pub(crate) kept_by_model: Option<u64>,
    owned_by_engine: bool,
    /// Set once the engine fixes the cache's shapes for captured decode steps.
    fixed: Option<FixedShapes>,
}

impl KvCache {
    /// A zeroed cache for `batch` rows of up to `capacity` positions.
    pub fn new(layout: CacheLayout, batch: i64, capacity: i64, kind: Kind, device: Device) -> Self {
        let shape = [batch, layout.kv_heads as i64, capacity, layout.head_dim as i64];
        KvCache {
            layers: (0..layout.layers)
                .map(|_| {
                    (
                        Tensor::zeros(shape, (kind, device)),
                        Tensor::zeros(shape, (kind, device)),
                    )
                })
                .collect(),
            key_mask: Tensor::zeros([batch, capacity], (Kind::Bool, device)),
            len: 0,
            start: 0,
            kept_by_model: None,
            owned_by_engine: true,
            fixed: None,
        }
    }

    /// The bookkeeping of a cache a model keeps itself (no keys or values here).
    pub fn kept_by_model(batch: i64, capacity: i64, device: Device) -> Self {
        KvCache {
            layers: Vec::new(),
            key_mask: Tensor::zeros([batch, capacity], (Kind::Bool, device)),
            len: 0,
            start: 0,
            kept_by_model: None,
            owned_by_engine: false,
            fixed: None,
        }
    }

    /// A cache over tensors lent by the engine (the plugin side of the boundary).
    pub(crate) fn from_parts(layers: Vec<(Tensor, Tensor)>, key_mask: Tensor, len: i64) -> Self {
        KvCache {
            layers,
            key_mask,
            len,
            start: len,
            kept_by_model: None,
            owned_by_engine: true,
            fixed: None,
        }
    }

    /// Fixes the cache's shapes from here on, for decode steps captured as CUDA graphs
    /// (see `fixed_shapes`): the position written is a device tensor each forward advances,
    /// and attention reads the first `window` positions (more than are written, fewer than
    /// the capacity). A cache of a model that keeps its own refuses.
    pub fn fix_shapes(&mut self, window: i64) -> Result<()> {
        if !self.owned_by_engine {
            return Err(PluginError::failed(
                "a cache the model keeps itself cannot have fixed shapes",
            ));
        }
        self.check_window(window)?;
        self.fixed = Some(FixedShapes::new(self.len, window, self.key_mask.device()));
        Ok(())
    }

    /// Sets the positions attention reads in fixed shapes (see [`KvCache::fix_shapes`]).
    pub fn set_window(&mut self, window: i64) -> Result<()> {
        self.check_window(window)?;
        match &mut self.fixed {
            Some(fixed) => {
                fixed.window = window;
                Ok(())
            }
            None => Err(PluginError::failed("the cache's shapes are not fixed")),
        }
    }

    fn check_window(&self, window: i64) -> Result<()> {
        if window <= self.len || window > self.capacity() {
            return Err(PluginError::failed(format!(
                "an attention window of {window} positions does not fit a cache of {} holding {}",
                self.capacity(),
                self.len
            )));
        }
        Ok(())
    }

    /// The first `rows` rows, as views of this cache's storage with its fixed shapes (the
    /// cursor shared): a forward through the view writes here. The engine then counts the
    /// step with [`KvCache::count_step`].
    pub fn front_rows(&self, rows: i64) -> Result<KvCache> {
        let Some(fixed) = &self.fixed else {
            return Err(PluginError::failed(
                "only a cache with fixed shapes lends views of its rows",
            ));
        };
        Ok(KvCache {
            layers: self
                .layers
                .iter()
                .map(|(k, v)| (k.narrow(0, 0, rows), v.narrow(0, 0, rows)))
                .collect(),
            key_mask: self.key_mask.narrow(0, 0, rows),
            len: self.len,
            start: self.len,
            kept_by_model: None,
            owned_by_engine: true,
            fixed: Some(fixed.share()),
        })
    }

    /// Records `t` positions a forward through a view of this cache's rows wrote.
    pub fn count_step(&mut self, t: i64) {
        self.start = self.len;
        self.len += t;
    }

    /// Copies rows `rows[i]` to row `i` in place (int64 `[N]`), leaving the storage where it
    /// is: the rows after `N` keep stale keys that the engine no longer reads.
    pub fn move_rows_to_front(&mut self, rows: &Tensor) {
        let n = rows.size()[0];
        for (k, v) in &self.layers {
            k.narrow(0, 0, n).copy_(&k.index_select(0, rows));
            v.narrow(0, 0, n).copy_(&v.index_select(0, rows));
        }
        self.key_mask
            .narrow(0, 0, n)
            .copy_(&self.key_mask.index_select(0, rows));
    }

    /// The tensors, to lend across the boundary.
    pub(crate) fn parts(&self) -> (&[(Tensor, Tensor)], &Tensor) {
        (&self.layers, &self.key_mask)
    }

    /// Whether the engine holds the keys and values (and so may reorder or drop rows).
    pub fn is_owned_by_engine(&self) -> bool {
        self.owned_by_engine
    }

    pub fn batch(&self) -> i64 {
        self.key_mask.size()[0]
    }

    pub fn capacity(&self) -> i64 {
        self.key_mask.size()[1]
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|(k, v)| k.numel() * k.kind().elt_size_in_bytes() + v.numel() * v.kind().elt_size_in_bytes())
            .sum()
    }

    /// Records positions a model that keeps its own cache added (their mask only).
    pub(crate) fn advance(&mut self, mask: &Tensor) -> Result<()> {
        self.extend(mask).map(|_| ())
    }

    /// Records `t` positions a library wrote into this cache's lent storage (mask included).
    pub(crate) fn record_extension(&mut self, t: i64) {
        self.start = self.len;
        self.len += t;
    }
}

impl KeyValues for KvCache {
    fn len(&self) -> i64 {
        self.len
    }

    fn extend(&mut self, mask: &Tensor) -> Result<CacheStep> {
        let t = mask.size()[1];
        if self.len + t > self.capacity() {
            return Err(PluginError::failed(format!(
                "the key/value cache holds {} positions; {} more do not fit after {}",
                self.capacity(),
                t,
                self.len
            )));
        }
        let step = match &mut self.fixed {
            Some(fixed) if self.len + t > fixed.window => {
                return Err(PluginError::failed(format!(
                    "the attention window holds {} positions; {} more do not fit after {}",
                    fixed.window, t, self.len
                )));
            }
            Some(fixed) => fixed.extend(&self.key_mask, mask),
            None => {
                self.key_mask
                    .narrow(1, self.len, t)
                    .copy_(&mask.to_kind(Kind::Bool));
                step(&self.key_mask.narrow(1, 0, self.len + t), self.len, t)
            }
        };
        self.start = self.len;
        self.len += t;
        Ok(step)
    }

    fn store(&mut self, layer: usize, keys: &Tensor, values: &Tensor) -> (Tensor, Tensor) {
        let (k, v) = &self.layers[layer];
        if let Some(fixed) = &self.fixed {
            return fixed.store((k, v), keys, values);
        }
        let t = keys.size()[2];
        k.narrow(2, self.start, t).copy_(keys);
        v.narrow(2, self.start, t).copy_(values);
        (k.narrow(2, 0, self.len), v.narrow(2, 0, self.len))
    }

    fn select_rows(&mut self, rows: &Tensor) {
        // Fixed shapes keep their storage where captured graphs read it: they move rows to
        // the front in place instead (`move_rows_to_front`).
        debug_assert!(self.fixed.is_none(), "select_rows on a cache with fixed shapes");
        for (k, v) in &mut self.layers {
            *k = k.index_select(0, rows);
            *v = v.index_select(0, rows);
        }
        self.key_mask = self.key_mask.index_select(0, rows);
    }
}

/// A cache that grows by concatenation: for training passes, where gradients flow through
/// the keys and values it holds.
#[derive(Debug, Default)]
pub struct GrowingKvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// `[B, len]` bool.
    key_mask: Option<Tensor>,
}

impl KeyValues for GrowingKvCache {
    fn len(&self) -> i64 {
        self.key_mask.as_ref().map_or(0, |m| m.size()[1])
    }

    fn extend(&mut self, mask: &Tensor) -> Result<CacheStep> {
        let past = self.len();
        let mask = mask.to_kind(Kind::Bool);
        let key_mask = match &self.key_mask {
            Some(past_mask) => Tensor::cat(&[past_mask, &mask], 1),
            None => mask,
        };
        let step = step(&key_mask, past, key_mask.size()[1] - past);
        self.key_mask = Some(key_mask);
        Ok(step)
    }

    fn store(&mut self, layer: usize, keys: &Tensor, values: &Tensor) -> (Tensor, Tensor) {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, || None);
        }
        let (k, v) = match self.layers[layer].take() {
            Some((past_k, past_v)) => (
                Tensor::cat(&[&past_k, keys], 2),
                Tensor::cat(&[&past_v, values], 2),
            ),
            None => (keys.shallow_clone(), values.shallow_clone()),
        };
        self.layers[layer] = Some((k.shallow_clone(), v.shallow_clone()));
        (k, v)
    }

    fn select_rows(&mut self, rows: &Tensor) {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(0, rows);
            *v = v.index_select(0, rows);
        }
        if let Some(mask) = &mut self.key_mask {
            *mask = mask.index_select(0, rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: CacheLayout = CacheLayout {
        layers: 1,
        kv_heads: 2,
        head_dim: 3,
    };

    fn keys(b: i64, t: i64, start: f64) -> Tensor {
        Tensor::arange_start(start, start + (b * 2 * t * 3) as f64, (Kind::Float, Device::Cpu))
            .view([b, 2, t, 3])
    }

    #[test]
    fn both_caches_give_the_same_positions_masks_and_keys() {
        let mut fixed = KvCache::new(LAYOUT, 2, 8, Kind::Float, Device::Cpu);
        let mut growing = GrowingKvCache::default();
        // Row 0 is left-padded by one position.
        let prompt_mask = Tensor::from_slice(&[0i64, 1, 1, 1, 1, 1]).view([2, 3]);
        let next_mask = Tensor::from_slice(&[1i64, 1]).view([2, 1]);
        for (mask, start) in [(&prompt_mask, 0.0), (&next_mask, 100.0)] {
            let a = fixed.extend(mask).unwrap();
            let b = growing.extend(mask).unwrap();
            assert!(a.positions.equal(&b.positions) && a.attention_mask.equal(&b.attention_mask));
            let t = mask.size()[1];
            let (new_k, new_v) = (keys(2, t, start), keys(2, t, start + 1000.0));
            let (ka, va) = fixed.store(0, &new_k, &new_v);
            let (kb, vb) = growing.store(0, &new_k, &new_v);
            assert!(ka.equal(&kb) && va.equal(&vb));
        }
        assert_eq!((fixed.len(), growing.len()), (4, 4));
        let positions = fixed
            .extend(&Tensor::from_slice(&[1i64, 1]).view([2, 1]))
            .unwrap()
            .positions;
        assert_eq!(
            Vec::<i64>::try_from(positions.view([-1])).unwrap(),
            vec![3, 4],
            "padding is not counted"
        );
    }

    #[test]
    fn the_attention_mask_hides_padding_and_the_future_but_never_oneself() {
        let mut cache = GrowingKvCache::default();
        let step = cache
            .extend(&Tensor::from_slice(&[0i64, 1, 1]).view([1, 3]))
            .unwrap();
        let mask: Vec<bool> = Vec::try_from(step.attention_mask.view([-1])).unwrap();
        assert_eq!(
            mask,
            vec![true, false, false, false, true, false, false, true, true],
            "the pad sees itself only; real tokens see real keys at or before them"
        );
    }

    #[test]
    fn fixed_shapes_give_the_ordinary_positions_masks_and_keys_over_their_window() {
        let mut ordinary = KvCache::new(LAYOUT, 2, 8, Kind::Float, Device::Cpu);
        let mut fixed = KvCache::new(LAYOUT, 2, 8, Kind::Float, Device::Cpu);
        let prompt_mask = Tensor::from_slice(&[0i64, 1, 1, 1, 1, 1]).view([2, 3]);
        for cache in [&mut ordinary, &mut fixed] {
            cache.extend(&prompt_mask).unwrap();
            let _ = cache.store(0, &keys(2, 3, 0.0), &keys(2, 3, 1000.0));
        }
        fixed.fix_shapes(6).unwrap();
        // Row 0 decodes a padding step (a finished row) between two real ones.
        for (i, row_mask) in [[1i64, 1], [0, 1], [1, 1]].iter().enumerate() {
            let mask = Tensor::from_slice(row_mask).view([2, 1]);
            let a = ordinary.extend(&mask).unwrap();
            let b = fixed.extend(&mask).unwrap();
            let len = ordinary.len();
            assert!(a.positions.equal(&b.positions), "step {i}");
            assert_eq!(b.attention_mask.size(), [2, 1, 1, 6]);
            assert!(
                b.attention_mask.narrow(3, 0, len).equal(&a.attention_mask),
                "step {i}"
            );
            assert!(
                !bool::try_from(b.attention_mask.narrow(3, len, 6 - len).any()).unwrap(),
                "positions not written yet are hidden"
            );
            let (new_k, new_v) = (keys(2, 1, 100.0 * i as f64), keys(2, 1, 5000.0));
            let (ka, va) = ordinary.store(0, &new_k, &new_v);
            let (kb, vb) = fixed.store(0, &new_k, &new_v);
            assert_eq!(kb.size()[2], 6);
            assert!(kb.narrow(2, 0, len).equal(&ka) && vb.narrow(2, 0, len).equal(&va));
        }
        let err = fixed
            .extend(&Tensor::ones([2, 1], (Kind::Int64, Device::Cpu)))
            .unwrap_err();
        assert!(err.to_string().contains("window holds 6"), "{err}");
        fixed.set_window(8).unwrap();
        assert!(fixed.set_window(9).is_err() && fixed.set_window(6).is_err());
    }

    #[test]
    fn a_view_of_front_rows_writes_into_the_cache_after_rows_move_to_the_front() {
        let mut cache = KvCache::new(LAYOUT, 3, 4, Kind::Float, Device::Cpu);
        cache
            .extend(&Tensor::ones([3, 2], (Kind::Int64, Device::Cpu)))
            .unwrap();
        let _ = cache.store(0, &keys(3, 2, 0.0), &keys(3, 2, 0.0));
        cache.fix_shapes(4).unwrap();
        let before = cache.layers[0].0.copy();
        cache.move_rows_to_front(&Tensor::from_slice(&[2i64]));
        assert!(
            cache.layers[0].0.get(0).equal(&before.get(2)),
            "row 2 moved to row 0"
        );
        let mut view = cache.front_rows(1).unwrap();
        view.extend(&Tensor::ones([1, 1], (Kind::Int64, Device::Cpu)))
            .unwrap();
        let _ = view.store(0, &keys(1, 1, -50.0), &keys(1, 1, -50.0));
        cache.count_step(1);
        assert_eq!(cache.len(), 3);
        assert!(cache.layers[0]
            .0
            .get(0)
            .narrow(1, 2, 1)
            .equal(&keys(1, 1, -50.0).get(0)));
        // The cursor is shared: the cache's next forward writes after the view's.
        cache
            .extend(&Tensor::ones([3, 1], (Kind::Int64, Device::Cpu)))
            .unwrap();
        let _ = cache.store(0, &keys(3, 1, 7.0), &keys(3, 1, 7.0));
        assert!(cache.layers[0].0.narrow(2, 3, 1).equal(&keys(3, 1, 7.0)));
    }

    #[test]
    fn a_full_cache_refuses_more_and_rows_can_be_dropped() {
        let mut cache = KvCache::new(LAYOUT, 3, 2, Kind::Float, Device::Cpu);
        cache
            .extend(&Tensor::ones([3, 2], (Kind::Int64, Device::Cpu)))
            .unwrap();
        let err = cache
            .extend(&Tensor::ones([3, 1], (Kind::Int64, Device::Cpu)))
            .unwrap_err();
        assert!(err.to_string().contains("holds 2 positions"), "{err}");
        cache.select_rows(&Tensor::from_slice(&[2i64, 0]));
        assert_eq!((cache.batch(), cache.capacity(), cache.len()), (2, 2, 2));
        assert_eq!(cache.bytes(), 2 * (2 * 2 * 2 * 3) * 4);
    }
}
