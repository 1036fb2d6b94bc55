//! Batches of token sequences as tensors: prompts left-padded (which changes no sequence's
//! result, see the cache's positions), and runs of equal prompts found once.

use tch::{Device, Tensor};

/// Left-pads `sequences` with `pad_id` into `[B, T]` ids and a `[B, T]` 0/1 mask.
pub fn left_pad(sequences: &[Vec<i64>], pad_id: i64, device: Device) -> (Tensor, Tensor) {
    let width = sequences.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(sequences.len() * width);
    let mut mask = Vec::with_capacity(sequences.len() * width);
    for seq in sequences {
        let pad = width - seq.len();
        ids.extend(std::iter::repeat_n(pad_id, pad).chain(seq.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, seq.len())));
    }
    let shape = [sequences.len() as i64, width as i64];
    (
        Tensor::from_slice(&ids).view(shape).to_device(device),
        Tensor::from_slice(&mask).view(shape).to_device(device),
    )
}

/// Runs of equal consecutive rows (a step's G copies of one prompt): each distinct row once,
/// with its count.
pub fn runs(rows: &[Vec<i64>]) -> (Vec<Vec<i64>>, Vec<i64>) {
    let (mut distinct, mut counts): (Vec<Vec<i64>>, Vec<i64>) = (Vec::new(), Vec::new());
    for row in rows {
        match (distinct.last(), counts.last_mut()) {
            (Some(last), Some(count)) if last == row => *count += 1,
            _ => {
                distinct.push(row.clone());
                counts.push(1);
            }
        }
    }
    (distinct, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_group_equal_consecutive_prompts() {
        let rows = [vec![1, 2], vec![1, 2], vec![3], vec![1, 2]];
        let (distinct, counts) = runs(&rows);
        assert_eq!(distinct, vec![vec![1, 2], vec![3], vec![1, 2]]);
        assert_eq!(counts, vec![2, 1, 1]);
    }

    #[test]
    fn left_pad_aligns_sequences_right() {
        let (ids, mask) = left_pad(&[vec![7, 8, 9], vec![5]], 0, Device::Cpu);
        assert_eq!(
            Vec::<i64>::try_from(ids.view([-1])).unwrap(),
            vec![7, 8, 9, 0, 0, 5]
        );
        assert_eq!(
            Vec::<i64>::try_from(mask.view([-1])).unwrap(),
            vec![1, 1, 1, 0, 0, 1]
        );
    }
}
