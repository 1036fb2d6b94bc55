//! Data-parallel training across real processes over Gloo on loopback: two processes train
//! the weights one process trains with the same global batch and seed; rank 0 alone writes;
//! a resume across another world size is refused; a rank that dies or stalls stops the other
//! within `run.ddp_timeout`, which names it.

mod support;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tch::Tensor;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn crpo_host() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crpo-host"));
    // One thread each: two ranks share this machine's cores, as the figures in docs do.
    command.env("OMP_NUM_THREADS", "1").env("RUST_LOG", "warn");
    command
}

/// A run directory with the tiny model and a config whose per-device micro-batch is 5
/// completions, `accumulation` of them per optimizer update.
fn setup(dir: &Path, name: &str, accumulation: usize, run: &str) -> PathBuf {
    if !dir.join("model").exists() {
        crpo_plugins_policy::presets::write_tiny(&dir.join("model"), 3).unwrap();
    }
    let data = repo().join("data/demo");
    let config = format!(
        r#"
[run]
output_dir = "{name}"
seed = 11
sample_steps = 1
{run}
[model]
path = "model"
device = "cpu"
[data]
path = "{}"
system_prompt = "Answer the question."
[[reward.objectives]]
plugin = "consistency"
weight = 1.0
[[reward.objectives]]
plugin = "accuracy"
weight = 0.5
[algorithm]
num_generations = 4
prompts_per_step = 5
mini_batch_size = 5
gradient_accumulation_steps = {accumulation}
learning_rate = 2e-3
max_completion_length = 12
beta = 0.04
[eval]
limit = 5
batch_size = 2
max_completion_length = 8
"#,
        data.join("train.jsonl").display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    path
}

fn succeeded(output: Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Trains runs `one` (one process, two accumulated micro-batches of 5) and `two` (two
/// processes, one micro-batch of 5 each) for 3 steps with a checkpoint at the end, each
/// config passed through `adjust` first; returns `two`'s config.
fn train_one_and_two_processes(dir: &Path, adjust: impl Fn(PathBuf) -> PathBuf) -> PathBuf {
    let one = adjust(setup(
        dir,
        "one",
        2,
        "max_steps = 3\nsave_steps = 3\neval_steps = 3",
    ));
    let two = adjust(setup(
        dir,
        "two",
        1,
        "max_steps = 3\nsave_steps = 3\neval_steps = 3\nddp_timeout = 120",
    ));
    let one_process = crpo_host()
        .args(["train", "--config"])
        .arg(&one)
        .output()
        .unwrap();
    succeeded(one_process, "one process");
    let two_processes = crpo_host()
        .args(["train", "--nproc", "2", "--config"])
        .arg(&two)
        .output()
        .unwrap();
    succeeded(two_processes, "two processes");
    two
}

fn weights(run: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(run.join("checkpoints/step-000003/model/model.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn max_difference(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .map(|(name, tensor)| (tensor - &b[name]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

fn metric_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn two_processes_train_the_weights_one_process_trains() {
    let dir = tempfile::tempdir().unwrap();
    // The same global batch, as TRL counts it: 10 completions per optimizer update, from two
    // accumulated micro-batches of 5 in one process or one of 5 on each of two. The five
    // prompts split 3 + 2, so groups stay whole and the ranks' shares differ.
    let two = train_one_and_two_processes(dir.path(), |path| path);
    let (one_run, two_run) = (dir.path().join("one"), dir.path().join("two"));
    let processes = |run: &Path| -> serde_json::Value {
        let info = std::fs::read_to_string(run.join("run_info.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&info).unwrap()["processes"].clone()
    };
    assert_eq!((processes(&one_run), processes(&two_run)), (1.into(), 2.into()));
    let initial: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join("model/model.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let moved = max_difference(&weights(&one_run), &initial);
    assert!(
        moved > 1e-3,
        "the run must move the weights for the comparison to mean anything ({moved})"
    );
    let apart = max_difference(&weights(&one_run), &weights(&two_run));
    eprintln!("one and two processes differ by {apart} (moved {moved})");
    assert!(
        apart < 1e-5,
        "one and two processes differ by {apart} (moved {moved})"
    );
    // The same rollouts and statistics, recorded once, by rank 0.
    let (a, b) = (metric_lines(&one_run), metric_lines(&two_run));
    assert_eq!(b.len(), 3, "rank 0 alone writes metrics");
    for (x, y) in a.iter().zip(&b) {
        for key in ["reward", "completion_length", "objectives"] {
            assert_eq!(x[key], y[key], "{key} at step {}", x["step"]);
        }
        let (kl_one, kl_two) = (x["kl"].as_f64().unwrap(), y["kl"].as_f64().unwrap());
        assert!((kl_one - kl_two).abs() < 1e-6, "kl {kl_one} vs {kl_two}");
        assert!(y["communication_s"].as_f64().unwrap() > 0.0);
    }
    let samples = std::fs::read_to_string(two_run.join("samples.jsonl")).unwrap();
    assert!(!samples.is_empty());
    // The held-out evaluation, its batches shared between the ranks (3 batches of 2, 2 and 1
    // questions: 2 on rank 0, 1 on rank 1), is the one a single process gives on those weights.
    let checkpoint = two_run.join("checkpoints/step-000003/model");
    let report = dir.path().join("eval.json");
    let evaluated = crpo_host()
        .args(["eval", "--temperature", "0", "--samples", "1", "--config"])
        .arg(&two)
        .arg("--model")
        .arg(&checkpoint)
        .arg("--output")
        .arg(&report)
        .output()
        .unwrap();
    succeeded(evaluated, "eval");
    let alone: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let shared = &b[2]["eval"]["greedy"];
    assert_eq!(shared["questions"], 5);
    for key in ["questions", "accuracy", "reward", "objectives"] {
        assert_eq!(shared[key], alone[0][key], "eval {key}");
    }
    // A different world size does not continue the run.
    let more = std::fs::read_to_string(&two)
        .unwrap()
        .replace("max_steps = 3", "max_steps = 4");
    std::fs::write(&two, more).unwrap();
    let resumed = crpo_host()
        .args(["train", "--resume", "--config"])
        .arg(&two)
        .output()
        .unwrap();
    assert!(!resumed.status.success());
    let message = String::from_utf8_lossy(&resumed.stderr);
    assert!(
        message.contains("trained across 2 process(es) and this start has 1"),
        "{message}"
    );
}

/// The launcher's worker of `rank`, once it is running.
fn worker_pid(launcher: &Child, rank: usize) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", launcher.id()))
            .unwrap_or_default();
        for pid in children.split_whitespace() {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if environ
                .split(|&b| b == 0)
                .any(|var| var == format!("RANK={rank}").as_bytes())
            {
                return pid.parse().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "no worker {rank}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A two-rank run of `config` (output `run`), once its first step is recorded.
fn start_after_a_step(dir: &Path, config: &Path) -> Child {
    // In its own process group, as a job in a terminal or under a scheduler.
    let mut launcher = crpo_host()
        .process_group(0)
        .args(["train", "--nproc", "2", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = dir.join("run/metrics.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&metrics).map_or(true, |m| m.lines().count() < 1) {
        assert!(Instant::now() < deadline, "no step within 2 minutes");
        if launcher.try_wait().unwrap().is_some() {
            let output = launcher.wait_with_output().unwrap();
            panic!(
                "the run stopped by itself: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    launcher
}

/// Starts a two-rank run, waits for its first step, sends `signal` to rank 1 and returns
/// rank 0's messages once the run has stopped, and how long that took.
fn run_and_break_rank_one(signal: i32) -> (String, Duration) {
    run_and_break_rank(1, signal)
}

/// As [`run_and_break_rank_one`], for rank `broken_rank`: the run's messages once it stopped.
fn run_and_break_rank(broken_rank: usize, signal: i32) -> (String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(
        dir.path(),
        "run",
        1,
        "ddp_timeout = 8\nmax_steps = 1000\nsave_steps = 0",
    );
    let mut launcher = start_after_a_step(dir.path(), &config);
    let pid = worker_pid(&launcher, broken_rank);
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(pid as i32, signal) };
    let broken = Instant::now();
    let output = loop {
        if launcher.try_wait().unwrap().is_some() {
            break launcher.wait_with_output().unwrap();
        }
        if broken.elapsed() > Duration::from_secs(90) {
            let _ = launcher.kill();
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("the run did not stop within 90 s of rank {broken_rank}'s {signal}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // SAFETY: as above (a stopped rank is killed by the launcher; this makes sure).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(!output.status.success());
    let messages = String::from_utf8_lossy(&output.stderr).into_owned();
    eprintln!("{messages}");
    (messages, broken.elapsed())
}

#[test]
fn a_rank_that_dies_stops_the_other_which_names_it() {
    let (messages, took) = run_and_break_rank_one(libc::SIGKILL);
    assert!(messages.contains("rank 1 stopped responding"), "{messages}");
    // Where it was is the last collective it entered: it may have died in the work after it.
    assert!(
        messages.contains("the last collective it entered: step "),
        "{messages}"
    );
    assert!(
        messages.contains("worker rank 1 of 2 failed (killed by signal 9)"),
        "{messages}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}

/// Under torchrun, every command but train (and the read-only doctor and plugins) would run
/// once per rank: two `eval`s wrote one completions file together, two `demo`s raced for
/// one directory and left it half written.
#[test]
fn single_process_commands_are_refused_as_one_of_several_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "run", 1, "max_steps = 1");
    let out = dir.path().join("demo");
    for args in [
        vec!["eval".into(), "--config".into(), config.display().to_string()],
        vec!["demo".into(), "--out".into(), out.display().to_string()],
    ] {
        let output = crpo_host()
            .args(&args)
            .env("RANK", "0")
            .env("WORLD_SIZE", "2")
            .output()
            .unwrap();
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            message.contains(&format!("`crpo-host {}` runs in one process", args[0]))
                && message.contains("WORLD_SIZE=2"),
            "{message}"
        );
    }
    assert!(!out.exists(), "the refused demo wrote nothing");
}

/// A rank killed before it joins leaves its peers waiting at the rendezvous for
/// `ddp_timeout`: the launcher, which saw it die, stops them without waiting that long.
#[test]
fn a_rank_killed_before_it_joins_ends_the_run_well_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(
        dir.path(),
        "run",
        1,
        "ddp_timeout = 300\nmax_steps = 1000\nsave_steps = 0",
    );
    let mut launcher = crpo_host()
        .process_group(0)
        .args(["train", "--nproc", "2", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = worker_pid(&launcher, 1);
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let killed = Instant::now();
    while launcher.try_wait().unwrap().is_none() {
        if killed.elapsed() > Duration::from_secs(90) {
            let _ = launcher.kill();
            panic!("the run still waited 90 s after rank 1 died (ddp_timeout = 300 s)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = launcher.wait_with_output().unwrap();
    let messages = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        messages.contains("worker rank 1 of 2 failed (killed by signal 9)"),
        "{messages}"
    );
}

/// Rank 0 hosts the rendezvous store: the other rank names it once, without libtorch's C++
/// stack for every store call that failed.
#[test]
fn a_killed_rank_zero_stops_the_other_which_names_it_without_cpp_stacks() {
    let (messages, took) = run_and_break_rank(0, libc::SIGKILL);
    assert!(
        messages.contains("worker rank 0 of 2 failed (killed by signal 9)"),
        "{messages}"
    );
    assert!(messages.contains("rank 1 of 2"), "{messages}");
    assert!(!messages.contains("frame #"), "{messages}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn a_rank_that_stalls_stops_the_other_within_the_timeout() {
    let (messages, took) = run_and_break_rank_one(libc::SIGSTOP);
    assert!(messages.contains("rank 1 stopped responding"), "{messages}");
    // The launcher's last word does not blame rank 0, the first to end (it found the stall).
    assert!(
        messages.contains("rank(s) 1 still ran") && !messages.contains("worker rank 0 of 2 failed"),
        "{messages}"
    );
    // ddp_timeout = 8 s, the stale heartbeat's wait, the launcher's 10 s after rank 0 ended.
    assert!(took < Duration::from_secs(35), "{took:?}");
}

/// SIGTERM to one worker (a scheduler signalling a process, not the job): every rank stops
/// after the step and rank 0 checkpoints, and the launcher says so with 143 (it reported rank 0
/// as failed, exit 1).
#[test]
fn sigterm_to_one_worker_stops_the_run_as_a_signal_to_the_launcher_does() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(
        dir.path(),
        "run",
        1,
        "ddp_timeout = 20\nmax_steps = 1000\nsave_steps = 1000",
    );
    let mut launcher = start_after_a_step(dir.path(), &config);
    let pid = worker_pid(&launcher, 1);
    // SAFETY: signalling a process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let signalled = Instant::now();
    while launcher.try_wait().unwrap().is_none() {
        assert!(
            signalled.elapsed() < Duration::from_secs(90),
            "the run did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = launcher.wait_with_output().unwrap();
    let messages = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(143), "{messages}");
    assert!(
        messages.contains("workers stopped on SIGTERM") && !messages.contains("failed (exit status"),
        "{messages}"
    );
    assert!(dir.path().join("run/checkpoints").exists(), "{messages}");
}

/// Rank 0 stopped, not dead: the store it hosts keeps the connection open and never answers,
/// and libtorch's store client waits for the answer without a limit (rank 1 hung for good).
#[test]
fn a_stalled_rank_zero_stops_the_other_within_the_timeout() {
    let (messages, took) = run_and_break_rank(0, libc::SIGSTOP);
    assert!(
        messages.contains("rank 1 of 2") && messages.contains("rank 0, which hosts the rendezvous store"),
        "{messages}"
    );
    // ddp_timeout = 8 s, the collective's grace of 15 s, the launcher's 10 s after rank 1 ended.
    assert!(took < Duration::from_secs(60), "{took:?}");
}

#[test]
fn more_local_ranks_than_cores_are_refused_before_any_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "many", 1, "max_steps = 1");
    let started = Instant::now();
    let output = crpo_host()
        .args(["train", "--nproc", "100000", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("--nproc 100000") && stderr.contains("CPU core(s)"),
        "{stderr}"
    );
    assert!(!stderr.contains("starting"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!dir.path().join("many/metrics.jsonl").exists());
}

#[test]
fn a_config_every_rank_would_refuse_is_refused_once_before_any_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "long", 1, "max_steps = 1");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("max_completion_length = 12", "max_completion_length = 4000"),
    )
    .unwrap();
    let output = crpo_host()
        .args(["train", "--nproc", "2", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.matches("beyond the 2048 positions").count(), 1, "{stderr}");
    assert!(!stderr.contains("worker rank"), "{stderr}");
    assert!(!dir.path().join("long").exists(), "{stderr}");
}

/// `train --config config` as rank 1 of 2 with rank 0 expected at 127.0.0.1:`port`, and how
/// long it took to end.
fn train_as_rank_one_of_two(config: &Path, port: u16) -> (Output, Duration) {
    let started = Instant::now();
    let output = crpo_host()
        .args(["train", "--config"])
        .arg(config)
        .envs([
            ("RANK", "1"),
            ("LOCAL_RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "127.0.0.1"),
        ])
        .env("MASTER_PORT", port.to_string())
        .output()
        .unwrap();
    (output, started.elapsed())
}

#[test]
fn a_rank_that_cannot_reach_rank_zero_names_the_address_once_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "alone", 1, "max_steps = 1\nddp_timeout = 3");
    // Nothing listens there: rank 0 never started.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (output, elapsed) = train_as_rank_one_of_two(&config, port);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    // libtorch's log of each failed try carried its C++ stack.
    assert!(!stderr.contains("frame #"), "{stderr}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}

#[test]
fn a_port_another_program_holds_fails_the_start_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "taken", 1, "max_steps = 1\nddp_timeout = 2");
    // Another program on MASTER_PORT: it accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let connections: Vec<_> = listener.incoming().take(64).collect();
        drop(connections);
    });
    let (output, elapsed) = train_as_rank_one_of_two(&config, port);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("rendezvous"),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    drop(held);
}

/// A web server (or a proxy) on MASTER_PORT answers libtorch's ping with its own bytes.
#[test]
fn a_port_another_program_answers_on_is_named_as_no_rendezvous() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "http", 1, "max_steps = 1\nddp_timeout = 5");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut connection in listener.incoming().take(64).flatten() {
            let mut request = [0u8; 64];
            let _ = connection.read(&mut request);
            let _ = connection.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let (output, elapsed) = train_as_rank_one_of_two(&config, port);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "what answers at 127.0.0.1:{port} is not a rendezvous store"
        )),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}

#[test]
fn a_killed_two_process_run_resumes_to_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let settings = "max_steps = 5\nsave_steps = 2\nddp_timeout = 60";
    let whole = setup(dir.path(), "whole", 1, settings);
    let killed = setup(dir.path(), "killed", 1, settings);
    succeeded(
        crpo_host()
            .args(["train", "--nproc", "2", "--config"])
            .arg(&whole)
            .output()
            .unwrap(),
        "the uninterrupted run",
    );
    let mut launcher = crpo_host()
        .args(["train", "--nproc", "2", "--config"])
        .arg(&killed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (rank_zero, rank_one) = (worker_pid(&launcher, 0), worker_pid(&launcher, 1));
    let checkpoint = dir.path().join("killed/checkpoints/step-000002");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !checkpoint.exists() {
        assert!(Instant::now() < deadline, "no checkpoint within 2 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The whole job, at once, as a scheduler's preemption would.
    for pid in [launcher.id(), rank_zero, rank_one] {
        // SAFETY: signalling processes this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let _ = launcher.wait();
    succeeded(
        crpo_host()
            .args(["train", "--nproc", "2", "--resume", "--config"])
            .arg(&killed)
            .output()
            .unwrap(),
        "the resumed run",
    );
    let read = |run: &str| -> HashMap<String, Tensor> {
        Tensor::read_safetensors(
            dir.path()
                .join(run)
                .join("checkpoints/step-000005/model/model.safetensors"),
        )
        .unwrap()
        .into_iter()
        .collect()
    };
    assert_eq!(max_difference(&read("whole"), &read("killed")), 0.0);
    assert_eq!(metric_lines(&dir.path().join("killed")).len(), 5);
}

#[test]
fn torchrun_launches_a_two_rank_run() {
    // torch itself is always in the set-up venv: torchrun is `python -m torch.distributed.run`.
    let python = support::venv_python_with("torch", "scripts/setup.sh").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = setup(
        dir.path(),
        "run",
        1,
        "max_steps = 2\nsave_steps = 2\nddp_timeout = 60",
    );
    let output = Command::new(python)
        .args([
            "-m",
            "torch.distributed.run",
            "--no-python",
            "--nproc-per-node",
            "2",
        ])
        .arg(env!("CARGO_BIN_EXE_crpo-host"))
        .args(["train", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let messages = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{messages}");
    assert!(messages.contains("distributed: rank 0 of 2"), "{messages}");
    // torchrun's agent hosts the store: rank 0 connects to it rather than fail to bind.
    assert!(!messages.contains("failed to bind"), "{messages}");
    assert_eq!(metric_lines(&dir.path().join("run")).len(), 2);
    assert!(dir.path().join("run/checkpoints/step-000002").is_dir());
}

#[test]
fn two_processes_train_the_lora_adapters_one_process_trains() {
    // Rank 0 draws fresh adapters from the run's seed, as one process does, and broadcasts them;
    // the reference is the base with adapters off on each rank.
    let dir = tempfile::tempdir().unwrap();
    let with_lora = |path: PathBuf| {
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "device = \"cpu\"\n",
            "device = \"cpu\"\n[model.lora]\nr = 4\nlora_alpha = 8\ntarget_modules = \"all-linear\"\n",
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    train_one_and_two_processes(dir.path(), with_lora);
    let adapters = |run: &str| -> HashMap<String, Tensor> {
        Tensor::read_safetensors(
            dir.path()
                .join(run)
                .join("checkpoints/step-000003/model/adapter_model.safetensors"),
        )
        .unwrap()
        .into_iter()
        .collect()
    };
    let (a, b) = (adapters("one"), adapters("two"));
    let largest = a
        .values()
        .map(|t| t.abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    assert!(largest > 1e-3, "the adapters moved ({largest})");
    let apart = max_difference(&a, &b);
    assert!(apart < 1e-5, "one and two processes' adapters differ by {apart}");
}

/// Sends `signal` to the launcher of a two-rank run (or to its whole process group) after a
/// step: every rank finishes the step, rank 0 checkpoints, and the run exits 128 + signal.
fn a_signal_checkpoints_and_stops_every_rank(signal: i32, to_the_group: bool) {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(
        dir.path(),
        "run",
        1,
        "max_steps = 1000\nsave_steps = 1000\nddp_timeout = 60",
    );
    let launcher = start_after_a_step(dir.path(), &config);
    let pid = launcher.id() as i32;
    // SAFETY: signalling the launcher this test started (and its process group).
    unsafe { libc::kill(if to_the_group { -pid } else { pid }, signal) };
    let output = launcher.wait_with_output().unwrap();
    let messages = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(128 + signal), "{messages}");
    assert!(messages.contains("stopped by SIG"), "{messages}");
    let checkpoints: Vec<_> = std::fs::read_dir(dir.path().join("run/checkpoints"))
        .unwrap()
        .collect();
    assert_eq!(
        checkpoints.len(),
        1,
        "one checkpoint, at the step every rank stopped after"
    );
}

#[test]
fn sigterm_to_the_launcher_checkpoints_and_stops_every_rank() {
    a_signal_checkpoints_and_stops_every_rank(libc::SIGTERM, false);
}

/// A scheduler signalling the whole job (SLURM, `kill -TERM -PGID`): each worker gets the
/// signal once, from the launcher, so it is a first signal, never a second that stops it at
/// once before rank 0 checkpoints.
#[test]
fn sigterm_to_the_whole_job_checkpoints_and_stops_every_rank() {
    a_signal_checkpoints_and_stops_every_rank(libc::SIGTERM, true);
}

/// Ctrl-C reaches the launcher (the terminal's foreground group), which passes it on.
#[test]
fn sigint_to_the_launcher_checkpoints_and_stops_every_rank() {
    a_signal_checkpoints_and_stops_every_rank(libc::SIGINT, false);
}

/// Two ranks started by hand with configs that differ (another learning rate and group size):
/// both stop at start-up naming each key, before any file is written — one trained its replica
/// apart from the other without a word, the other failed deep inside a step.
#[test]
fn ranks_started_with_different_configs_are_refused_naming_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "run", 1, "max_steps = 1\nddp_timeout = 20");
    let other = dir.path().join("other.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let changed = text
        .replace("learning_rate = 2e-3", "learning_rate = 1e-2")
        .replace("num_generations = 4", "num_generations = 2");
    std::fs::write(&other, changed).unwrap();
    let port = free_port();
    let (zero, one) = (spawn_rank(&config, 0, 2, port), spawn_rank(&other, 1, 2, port));
    for child in [zero, one] {
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("algorithm.learning_rate: 0.002 on rank 0, 0.01 on rank 1")
                && stderr.contains("algorithm.num_generations: 4 on rank 0, 2 on rank 1"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(!dir.path().join("run/metrics.jsonl").exists());
}

/// A rank whose data file holds other contents (a machine's stale copy) trained on prompts no
/// rank chose and recorded its completions under rank 0's examples, without a word.
#[test]
fn ranks_reading_different_data_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "run", 1, "max_steps = 1\nddp_timeout = 20");
    let demo = repo().join("data/demo/train.jsonl");
    let stale = dir.path().join("stale.jsonl");
    let fewer: String = std::fs::read_to_string(&demo)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&stale, fewer).unwrap();
    let other = dir.path().join("other.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &other,
        text.replace(&demo.display().to_string(), &stale.display().to_string()),
    )
    .unwrap();
    let port = free_port();
    let (zero, one) = (spawn_rank(&config, 0, 2, port), spawn_rank(&other, 1, 2, port));
    for child in [zero, one] {
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("the ranks read different training data")
                && stderr.contains("stale.jsonl on rank 1"),
            "{stderr}"
        );
    }
    assert!(!dir.path().join("run/metrics.jsonl").exists());
}

/// Two processes told RANK=1 (RANK from SLURM_LOCALID on two nodes): the one that claims it
/// second is refused naming the mistake (it blamed rank 0, which was fine).
#[test]
fn a_rank_started_twice_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // A run that lasts: the refused process must find the rendezvous still there.
    let config = setup(
        dir.path(),
        "run",
        1,
        "max_steps = 1000\nsave_steps = 0\nddp_timeout = 20",
    );
    let port = free_port();
    let mut children = vec![
        spawn_rank(&config, 0, 2, port),
        spawn_rank(&config, 1, 2, port),
        spawn_rank(&config, 1, 2, port),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        if let Some(i) = children.iter_mut().position(|c| c.try_wait().unwrap().is_some()) {
            break children.remove(i);
        }
        assert!(Instant::now() < deadline, "no process stopped");
        std::thread::sleep(Duration::from_millis(100));
    };
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    let output = refused.wait_with_output().unwrap();
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("another process was started as RANK=1 too"),
        "{message}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `train --config config` as rank `rank` of `world_size`, started by hand as torchrun would.
fn spawn_rank(config: &Path, rank: usize, world_size: usize, port: u16) -> Child {
    crpo_host()
        .args(["train", "--config"])
        .arg(config)
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world_size.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A rank that never starts is named by every rank that did (rank 1 blamed rank 0, which was
/// waiting for it inside libtorch's store, and rank 0 only counted the clients).
#[test]
fn a_rank_that_never_starts_is_named_by_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "run", 1, "max_steps = 1\nddp_timeout = 3");
    let port = free_port();
    let started = Instant::now();
    let ranks = [spawn_rank(&config, 0, 3, port), spawn_rank(&config, 1, 3, port)];
    for child in ranks {
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("rank 2 of 3 did not join within 3 s"), "{stderr}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// Ranks told different WORLD_SIZEs: each stops within the timeout saying so (rank 0 used to
/// wait, silent, for a rank that never came).
#[test]
fn ranks_with_different_world_sizes_stop_within_the_timeout_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "run", 1, "max_steps = 1\nddp_timeout = 15");
    let port = free_port();
    let started = Instant::now();
    let (zero, one) = (spawn_rank(&config, 0, 2, port), spawn_rank(&config, 1, 3, port));
    for child in [zero, one] {
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("WORLD_SIZE differs between ranks"), "{stderr}");
        assert!(!stderr.contains("frame #"), "{stderr}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
