//! Two real processes (this test binary, started again as rank 0 and rank 1) join a Gloo
//! group over a TCPStore on 127.0.0.1 and run every collective; a rank that dies makes the
//! other's next collective fail within the timeout instead of hanging.

use crpo_torch_ext::c10d::{Backend, GradientSync, ProcessGroup, Rendezvous, BUCKET_BYTES};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

const RANK_VAR: &str = "CRPO_C10D_TEST_RANK";
const PORT_VAR: &str = "CRPO_C10D_TEST_PORT";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

fn join_from_env(timeout: Duration) -> ProcessGroup {
    let rank: usize = std::env::var(RANK_VAR).unwrap().parse().unwrap();
    let port: u16 = std::env::var(PORT_VAR).unwrap().parse().unwrap();
    ProcessGroup::join(&Rendezvous {
        host: "127.0.0.1".into(),
        port,
        host_store: rank == 0,
        prefix: "test".into(),
        bind_host: "127.0.0.1".into(),
        rank,
        world_size: 2,
        backend: Backend::Gloo,
        timeout,
    })
    .unwrap_or_else(|e| panic!("rank {rank}: {e}"))
}

/// One pair of ranks at a time: a port just found free may be handed out again.
static ONE_PAIR_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `test` in two child processes at once, ranks 0 and 1; their exit statuses and output.
fn run_two_ranks(test: &str) -> Vec<(bool, String)> {
    assert!(
        Backend::Gloo.built(),
        "this build has no Gloo: scripts/setup.sh installs libgloo-dev"
    );
    let _pair = ONE_PAIR_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let port = free_port().to_string();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(std::env::current_exe().unwrap())
                .args([test, "--exact", "--nocapture"])
                .env(RANK_VAR, rank.to_string())
                .env(PORT_VAR, &port)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a rank starts")
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().expect("a rank ends");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
            )
        })
        .collect()
}

#[test]
fn two_ranks_reduce_broadcast_and_gather_over_loopback() {
    if std::env::var(RANK_VAR).is_err() {
        for (rank, (ok, output)) in run_two_ranks("two_ranks_reduce_broadcast_and_gather_over_loopback")
            .into_iter()
            .enumerate()
        {
            assert!(ok, "rank {rank} failed:\n{output}");
        }
        return;
    }
    let group = join_from_env(Duration::from_secs(30));
    let rank = group.rank as f64;
    // Sum, over a bucket boundary and two dtypes.
    let floats = Tensor::full([1000], rank + 1.0, (Kind::Float, Device::Cpu));
    let big = Tensor::full(
        [(crpo_torch_ext::c10d::BUCKET_BYTES / 4 + 7) as i64],
        rank,
        (Kind::Float, Device::Cpu),
    );
    let ints = Tensor::full([3], 10 * (rank as i64 + 1), (Kind::Int64, Device::Cpu));
    group.all_reduce_sum(&[&floats, &big, &ints]).unwrap();
    assert_eq!(floats.double_value(&[999]), 3.0);
    assert_eq!(big.double_value(&[0]), 1.0);
    assert_eq!(ints.int64_value(&[2]), 30);
    // The mean: (1 + 2) / 2; integers are refused, not rounded.
    let value = Tensor::full([5], rank + 1.0, (Kind::Float, Device::Cpu));
    group.all_reduce_mean(&[&value]).unwrap();
    assert_eq!(value.double_value(&[4]), 1.5);
    let error = group.all_reduce_mean(&[&ints]).unwrap_err();
    assert!(error.contains("Int64"), "{error}");
    // Broadcast from rank 1.
    let mine = Tensor::full([2, 3], rank * 5.0, (Kind::Float, Device::Cpu));
    group.broadcast(&[&mine], 1).unwrap();
    assert_eq!(mine.double_value(&[1, 2]), 5.0);
    // Gather values of different lengths, one empty.
    let bytes = if group.rank == 0 {
        b"rank zero".to_vec()
    } else {
        Vec::new()
    };
    let gathered = group.all_gather_bytes(&bytes).unwrap();
    assert_eq!(gathered, vec![b"rank zero".to_vec(), Vec::new()]);
    group.store_set(&format!("k{}", group.rank), b"v").unwrap();
    group.barrier().unwrap();
    // A set is sent without waiting for the store's answer: the peer's may land a moment later.
    let theirs = format!("k{}", 1 - group.rank);
    let deadline = Instant::now() + Duration::from_secs(10);
    while group.store_get(&theirs).unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(group.store_get(&theirs).unwrap(), Some(b"v".to_vec()));
    assert_eq!(group.store_get("never set").unwrap(), None);
}

#[test]
fn a_rank_that_dies_fails_the_others_collective_within_the_timeout() {
    if std::env::var(RANK_VAR).is_err() {
        let started = Instant::now();
        let outputs = run_two_ranks("a_rank_that_dies_fails_the_others_collective_within_the_timeout");
        assert!(outputs[1].0, "rank 1 exits cleanly: {}", outputs[1].1);
        assert!(outputs[0].0, "rank 0 saw the failure: {}", outputs[0].1);
        assert!(started.elapsed() < Duration::from_secs(60));
        return;
    }
    let group = join_from_env(Duration::from_secs(5));
    let tensor = Tensor::ones([4], (Kind::Float, Device::Cpu));
    group.all_reduce_sum(&[&tensor]).unwrap();
    if group.rank == 1 {
        // Dies without a word.
        std::process::exit(0);
    }
    let started = Instant::now();
    let error = group.all_reduce_sum(&[&tensor]).expect_err("the peer is gone");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed after {:?}",
        started.elapsed()
    );
    assert!(error.starts_with("all-reduce"), "{error}");
}

#[test]
fn gradient_sums_start_during_the_backward_and_equal_the_plain_sum() {
    if std::env::var(RANK_VAR).is_err() {
        for (rank, (ok, output)) in
            run_two_ranks("gradient_sums_start_during_the_backward_and_equal_the_plain_sum")
                .into_iter()
                .enumerate()
        {
            assert!(ok, "rank {rank} failed:\n{output}");
        }
        return;
    }
    let group = Arc::new(join_from_env(Duration::from_secs(30)));
    let rank = group.rank as f64;
    // Three parameters of 40% of a bucket each: buckets {2, 1} and {0}, in backward order.
    let numel = (BUCKET_BYTES * 2 / 5 / 4) as i64;
    let parameters: Vec<Tensor> = (0..3)
        .map(|_| Tensor::ones([numel], (Kind::Float, Device::Cpu)).set_requires_grad(true))
        .collect();
    let sync = GradientSync::new(group.clone(), &parameters.iter().collect::<Vec<_>>()).unwrap();
    for round in 0..2 {
        // An earlier, unarmed backward accumulates without sending (gradient accumulation).
        (&parameters[0] * 1.0 + &parameters[1] * 1.0 + &parameters[2] * 1.0)
            .sum(Kind::Float)
            .backward();
        sync.arm();
        // Each parameter's gradient: 1 + (rank + 1) · (k + 1); the sum over ranks 0 and 1 is
        // 2 + 3 · (k + 1).
        let loss = parameters
            .iter()
            .enumerate()
            .map(|(k, p)| (p * ((rank + 1.0) * (k as f64 + 1.0))).sum(Kind::Float))
            .reduce(|a, b| a + b)
            .unwrap();
        loss.backward();
        let sent_during_backward = sync.finish().unwrap();
        assert!(
            sent_during_backward >= 1,
            "round {round}: no bucket left during the backward"
        );
        for (k, p) in parameters.iter().enumerate() {
            assert_eq!(
                p.grad().double_value(&[7]),
                2.0 + 3.0 * (k as f64 + 1.0),
                "round {round}, parameter {k}"
            );
            let mut grad = p.grad();
            let _ = grad.zero_();
        }
    }
    // A rank that ran no backward still takes part; its gradients become the sum.
    let fresh = Tensor::ones([5], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let lonely = GradientSync::new(group.clone(), &[&fresh]).unwrap();
    if group.rank == 0 {
        lonely.arm();
        (&fresh * 4.0).sum(Kind::Float).backward();
    }
    lonely.finish().unwrap();
    assert_eq!(fresh.grad().double_value(&[0]), 4.0);
}
