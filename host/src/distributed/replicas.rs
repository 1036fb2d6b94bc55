//! Every rank starts from rank 0's model and optimizer state — broadcast, then proven equal by
//! a checksum of every weight — and rank 0's trainer state (step, data position).

use super::World;
use anyhow::bail;
use tch::{Kind, Tensor};

/// A checksum of `tensors`: per tensor the sum and the sum of squares in f64, and their
/// weighted positions, so a swapped or shifted value changes it too.
pub fn checksum(tensors: &[&Tensor]) -> Vec<f64> {
    let _guard = tch::no_grad_guard();
    tensors
        .iter()
        .flat_map(|tensor| {
            let flat = tensor.detach().reshape([-1]).to_kind(Kind::Double);
            let positions =
                Tensor::arange(flat.size()[0], (Kind::Double, flat.device())) / flat.size()[0].max(1) as f64;
            [
                flat.sum(Kind::Double).double_value(&[]),
                (&flat * &flat).sum(Kind::Double).double_value(&[]),
                (&flat * positions).sum(Kind::Double).double_value(&[]),
            ]
        })
        .collect()
}

/// Copies rank 0's `tensors` into every rank's, then checks that every rank's checksum of
/// `checked` (a superset: frozen weights too) is rank 0's, bit for bit.
pub fn start_identical(world: &World, tensors: &[&Tensor], checked: &[&Tensor]) -> anyhow::Result<()> {
    world.broadcast("broadcasting rank 0's weights", tensors)?;
    let mine = checksum(checked);
    let bytes: Vec<u8> = mine.iter().flat_map(|v| v.to_le_bytes()).collect();
    let all = world.all_gather("comparing weight checksums", &bytes)?;
    for (rank, theirs) in all.iter().enumerate() {
        if theirs != &all[0] {
            bail!(
                "rank {rank}'s weights differ from rank 0's after the broadcast (checksum over {} tensors): the ranks loaded different models (is model.path the same files on every machine?)",
                checked.len()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_sees_a_changed_or_moved_value() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let moved = Tensor::from_slice(&[2.0f32, 1.0, 3.0]);
        let changed = Tensor::from_slice(&[1.0f32, 2.0, 3.000_001]);
        assert_eq!(checksum(&[&a]), checksum(&[&a.copy()]));
        assert_ne!(checksum(&[&a]), checksum(&[&moved]));
        assert_ne!(checksum(&[&a]), checksum(&[&changed]));
    }
}
