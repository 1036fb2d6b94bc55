//! The decoder's blocks against hand-computed values, and its cache and padding invariants.

use crate::config::DecoderConfig;
use crate::qwen2::{DecoderModel, RmsNorm};
use crate::rope::{apply_rotary, Rotary};
use crpo_policy_sdk::{KeyValues, KvCache};
use tch::{nn, Device, Kind, Tensor};

pub fn tiny_config(tie: bool) -> DecoderConfig {
    serde_json::from_value(serde_json::json!({
        "model_type": "qwen2", "vocab_size": 61, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rope_theta": 10000.0, "tie_word_embeddings": tie, "rms_norm_eps": 1e-6
    }))
    .unwrap()
}

fn model(tie: bool) -> (nn::VarStore, DecoderModel) {
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = DecoderModel::new(&vs.root(), &tiny_config(tie));
    (vs, model)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn rms_norm_matches_hand_computation() {
    let vs = nn::VarStore::new(Device::Cpu);
    let norm = RmsNorm::new(vs.root(), 4, 0.0);
    let out = norm.forward(&Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]));
    let rms = (30.0f64 / 4.0).sqrt();
    let expected = Tensor::from_slice(&[1.0 / rms, 2.0 / rms, 3.0 / rms, 4.0 / rms]).to_kind(Kind::Float);
    assert!(max_diff(&out, &expected) < 1e-6);
}

#[test]
fn rotary_matches_hand_computation() {
    // head_dim 4, theta 10000: inv_freq = [1, 0.01]; at position 1 the angles are [1, 0.01].
    let rotary = Rotary::new(4, 10_000.0, Device::Cpu);
    let (cos, sin) = rotary.cos_sin(&Tensor::from_slice(&[1i64]).view([1, 1]), Kind::Float);
    let xs = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([1, 1, 1, 4]);
    let out = apply_rotary(&xs, &cos, &sin).view([4]);
    let (c1, s1, c2, s2) = (1f64.cos(), 1f64.sin(), 0.01f64.cos(), 0.01f64.sin());
    let expected = [
        1.0 * c1 - 3.0 * s1,
        2.0 * c2 - 4.0 * s2,
        3.0 * c1 + 1.0 * s1,
        4.0 * c2 + 2.0 * s2,
    ];
    let expected = Tensor::from_slice(&expected).to_kind(Kind::Float);
    assert!(max_diff(&out, &expected) < 1e-6, "{out:?}");
    // Position 0 is the identity.
    let (cos0, sin0) = rotary.cos_sin(&Tensor::from_slice(&[0i64]).view([1, 1]), Kind::Float);
    assert!(max_diff(&apply_rotary(&xs, &cos0, &sin0), &xs) < 1e-7);
}

#[test]
fn grouped_query_attention_shares_each_kv_head_between_consecutive_query_heads() {
    // 4 query heads over 2 kv heads: heads 0,1 read kv head 0 and heads 2,3 kv head 1, as
    // transformers' repeat_kv (repeat_interleave) does.
    tch::manual_seed(1);
    let q = Tensor::randn([1, 4, 3, 8], (Kind::Float, Device::Cpu));
    let k = Tensor::randn([1, 2, 3, 8], (Kind::Float, Device::Cpu));
    let v = Tensor::randn([1, 2, 3, 8], (Kind::Float, Device::Cpu));
    let gqa = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, true, None, true);
    let k4 = k.repeat_interleave_self_int(2, 1, None);
    let v4 = v.repeat_interleave_self_int(2, 1, None);
    let explicit = Tensor::scaled_dot_product_attention(&q, &k4, &v4, None::<Tensor>, 0.0, true, None, false);
    assert!(max_diff(&gqa, &explicit) < 1e-6);
}

#[test]
fn incremental_decoding_with_cache_equals_full_forward() {
    for tie in [false, true] {
        let (_vs, model) = model(tie);
        let ids = Tensor::from_slice(&[3i64, 17, 5, 42, 8, 11, 29]).view([1, 7]);
        let ones = Tensor::ones([1, 7], (Kind::Int64, Device::Cpu));
        let full = tch::no_grad(|| model.forward(&ids, &ones)).unwrap();
        // The engine's preallocated cache, written in place.
        let mut cache = KvCache::new(model.cache_layout(), 1, 9, Kind::Float, Device::Cpu);
        let prefill =
            tch::no_grad(|| model.hidden_states(&ids.narrow(1, 0, 4), &ones.narrow(1, 0, 4), &mut cache))
                .unwrap();
        let mut steps = vec![model.logits(&prefill)];
        for i in 4..7 {
            let last = tch::no_grad(|| {
                model.forward_cached(&ids.narrow(1, i, 1), &ones.narrow(1, i, 1), &mut cache)
            });
            steps.push(last.unwrap().unsqueeze(1));
        }
        assert_eq!(cache.len(), 7);
        let incremental = Tensor::cat(&steps, 1);
        assert!(
            max_diff(&full, &incremental) < 1e-4,
            "tie={tie}: {}",
            max_diff(&full, &incremental)
        );
    }
}

#[test]
fn padded_batch_gives_each_sequence_its_own_logits() {
    let (_vs, model) = model(false);
    let long = [3i64, 17, 5, 42, 8];
    let short = [9i64, 21];
    let alone = |seq: &[i64]| {
        let ids = Tensor::from_slice(seq).view([1, seq.len() as i64]);
        tch::no_grad(|| model.forward(&ids, &ids.ones_like())).unwrap()
    };
    // Left padding (pad id 0) as generation uses.
    let ids = Tensor::from_slice(&[long.to_vec(), vec![0, 0, 0], short.to_vec()].concat()).view([2, 5]);
    let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 0, 0, 0, 1, 1]).view([2, 5]);
    let batch = tch::no_grad(|| model.forward(&ids, &mask)).unwrap();
    assert!(max_diff(&batch.get(0), &alone(&long).get(0)) < 1e-5);
    assert!(max_diff(&batch.get(1).narrow(0, 3, 2), &alone(&short).get(0)) < 1e-5);
    assert_eq!(
        batch.isnan().any().int64_value(&[]),
        0,
        "padding rows stay finite"
    );

    // And decoding a token more with the cache keeps them equal.
    let mut cache = KvCache::new(model.cache_layout(), 2, 6, Kind::Float, Device::Cpu);
    let _prompt_logits = tch::no_grad(|| model.forward_cached(&ids, &mask, &mut cache)).unwrap();
    let next = Tensor::from_slice(&[7i64, 7]).view([2, 1]);
    let step = tch::no_grad(|| model.forward_cached(&next, &next.ones_like(), &mut cache)).unwrap();
    let long_next = alone(&[long.as_slice(), &[7]].concat());
    let short_next = alone(&[short.as_slice(), &[7]].concat());
    assert!(max_diff(&step.get(0), &long_next.get(0).get(5)) < 1e-5);
    assert!(max_diff(&step.get(1), &short_next.get(0).get(2)) < 1e-5);
}

#[test]
fn backward_reaches_every_parameter() {
    let (vs, model) = model(false);
    let ids = Tensor::from_slice(&[3i64, 17, 5, 42, 8, 0, 0, 9, 21, 4]).view([2, 5]);
    let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 0, 0, 1, 1, 1]).view([2, 5]);
    let loss = model
        .forward(&ids, &mask)
        .unwrap()
        .log_softmax(-1, Kind::Float)
        .mean(Kind::Float);
    loss.backward();
    for (name, var) in vs.variables() {
        let grad = var.grad();
        assert!(grad.defined(), "{name} has no gradient");
        assert_eq!(
            grad.isfinite().all().int64_value(&[]),
            1,
            "{name} has a non-finite gradient"
        );
    }
}
