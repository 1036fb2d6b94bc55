//! How a distributed run starts, as PyTorch's do: each process reads its place from RANK,
//! WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (set by torchrun, by an sbatch script
//! around srun, or by `crpo-host train --nproc N`, which starts N local workers itself).

use crate::interrupt::Interrupted;
use anyhow::{bail, Context};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// This process's place in a distributed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    pub rank: usize,
    pub world_size: usize,
    /// The rank's index on its machine: which GPU it uses.
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent hosts the rendezvous store (TORCHELASTIC_USE_AGENT_STORE): rank 0
    /// connects to it instead of hosting one.
    pub agent_store: bool,
    /// Which attempt of an elastic job this is (TORCHELASTIC_RESTART_COUNT; 0 otherwise).
    pub restart: usize,
}

/// The most processes a run may have: far beyond any cluster's, within what the collectives'
/// per-rank buffers (and gloo's 32-bit sizes) can count.
const MAX_WORLD_SIZE: usize = 1 << 16;

const VARS: [&str; 5] = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"];

impl LaunchEnv {
    /// From the process environment: `None` when neither RANK nor WORLD_SIZE is set (a plain
    /// single-process run).
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// From `var` (the environment, or a test's table).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        if var("RANK").is_none() && var("WORLD_SIZE").is_none() {
            if var("SLURM_NTASKS").is_some_and(|n| n.trim() != "1") {
                tracing::warn!(
                    "SLURM_NTASKS is set but RANK and WORLD_SIZE are not: this process trains alone; to train across the job's tasks, set them from SLURM's (docs/distributed.md)"
                );
            }
            return Ok(None);
        }
        let required = |name: &str| {
            var(name).with_context(|| {
                format!(
                    "distributed launch: {name} is not set (a distributed run needs all of {}, as torchrun sets them)",
                    VARS.join(", ")
                )
            })
        };
        let number = |name: &str, text: String| -> anyhow::Result<usize> {
            text.trim()
                .parse()
                .with_context(|| format!("distributed launch: {name}=`{text}` is not a non-negative integer"))
        };
        let rank = number("RANK", required("RANK")?)?;
        let world_size = number("WORLD_SIZE", required("WORLD_SIZE")?)?;
        let local_rank = match var("LOCAL_RANK") {
            Some(text) => number("LOCAL_RANK", text)?,
            None => bail!("distributed launch: LOCAL_RANK is not set (the rank's index on its machine: which GPU it uses)"),
        };
        if world_size == 0 {
            bail!("distributed launch: WORLD_SIZE=0: a run has at least one process");
        }
        if rank >= world_size {
            bail!("distributed launch: RANK={rank} is not below WORLD_SIZE={world_size}");
        }
        if world_size > MAX_WORLD_SIZE {
            bail!("distributed launch: WORLD_SIZE={world_size} is more processes than any run has (at most {MAX_WORLD_SIZE})");
        }
        // Optional (torchrun sets it; a hand-written launch may not): the memory plan divides
        // the machine's memory by it.
        if let Some(text) = var("LOCAL_WORLD_SIZE") {
            let local = number("LOCAL_WORLD_SIZE", text)?;
            if local == 0 || local > world_size || local_rank >= local {
                bail!(
                    "distributed launch: LOCAL_WORLD_SIZE={local} is not the number of ranks on this machine (it must be above LOCAL_RANK={local_rank} and at most WORLD_SIZE={world_size})"
                );
            }
        }
        let master_addr = required("MASTER_ADDR")?.trim().to_string();
        if master_addr.is_empty() {
            bail!("distributed launch: MASTER_ADDR is empty (rank 0's host name or address)");
        }
        let port_text = required("MASTER_PORT")?;
        let master_port = port(&port_text).with_context(|| {
            format!("distributed launch: MASTER_PORT=`{port_text}` is not a port (1-65535)")
        })?;
        Ok(Some(LaunchEnv {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            agent_store: var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            restart: var("TORCHELASTIC_RESTART_COUNT")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
        }))
    }
}

/// Refuses `crpo-host {command}`, which runs in one process, started by a launcher (torchrun,
/// srun) as one of several ranks (WORLD_SIZE > 1): each would do the whole work and write the
/// same files at once (two `eval`s wrote one completions file together).
pub fn refuse_a_distributed_launch(
    command: &str,
    var: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    // srun sets no WORLD_SIZE: SLURM_STEP_NUM_TASKS counts its tasks (see local_rendezvous_port).
    for name in ["WORLD_SIZE", "SLURM_STEP_NUM_TASKS"] {
        let ranks = var(name)
            .and_then(|size| size.trim().parse::<usize>().ok())
            .filter(|&size| size > 1);
        if let Some(ranks) = ranks {
            bail!(
                "`crpo-host {command}` runs in one process, but this process is one of {name}={ranks} started together (torchrun, srun): each would do the whole work and write the same files; run it once, without the launcher (train alone runs across ranks)"
            );
        }
    }
    Ok(())
}

/// MASTER_PORT's text as a port (1-65535), spaces around it allowed.
fn port(text: &str) -> Option<u16> {
    text.trim().parse::<u16>().ok().filter(|&p| p > 0)
}

/// A free TCP port on the loopback interface, for a local rendezvous.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The port of `--nproc`'s local rendezvous: MASTER_PORT where the user set one (a port their
/// machine allows, as torchrun's `--master-port`), else a free one. Refused inside another
/// launch (RANK or WORLD_SIZE set: torchrun or an sbatch script already places this process).
fn local_rendezvous_port(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<u16> {
    for name in ["RANK", "WORLD_SIZE"] {
        if let Some(value) = var(name) {
            bail!(
                "--nproc starts the workers itself, but {name}={value} is set: this process is already one rank of a launch (torchrun, srun); drop --nproc, or unset {name}"
            );
        }
    }
    // srun sets neither RANK nor WORLD_SIZE: each of its tasks would start a run of its own.
    // SLURM_STEP_NUM_TASKS is srun's: the batch script of `sbatch -n 8` has SLURM_NTASKS=8,
    // and one `--nproc 8` there is right.
    if let Some(tasks) = var("SLURM_STEP_NUM_TASKS").filter(|n| n.trim() != "1") {
        bail!(
            "--nproc starts the workers of one machine itself, but this is one of SLURM_STEP_NUM_TASKS={tasks} srun tasks: each would start a run of its own; run one task with --nproc, or one task per rank without it, RANK and WORLD_SIZE set from SLURM's (docs/distributed.md)"
        );
    }
    let Some(text) = var("MASTER_PORT") else {
        return free_port();
    };
    let port = port(&text).with_context(|| {
        format!("--nproc: MASTER_PORT=`{text}` is not a port (1-65535); unset it for a free one")
    })?;
    // A port a cluster exports for every job may be another run's rendezvous here: its
    // workers would join that run.
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        bail!("--nproc: MASTER_PORT={port} is in use on this machine (another run's rendezvous?): choose another, or unset MASTER_PORT for a free one");
    }
    Ok(port)
}

/// Whether `nproc` local ranks can each have their own device here: a GPU each on CUDA, a CPU
/// core each on the CPU (a rank computes with one thread). Checked before any worker starts:
/// a mistyped `--nproc 1000` would otherwise start a thousand processes, each loading the
/// model.
pub fn check_local_ranks(nproc: usize, cuda: bool, gpus: usize, cores: usize) -> anyhow::Result<()> {
    if nproc == 0 {
        bail!("--nproc must be at least 1");
    }
    if cuda && nproc > gpus {
        bail!(
            "--nproc {nproc}: this machine has {gpus} GPU(s) and each rank of a CUDA run takes one (at most --nproc {gpus})"
        );
    }
    if !cuda && nproc > cores {
        bail!(
            "--nproc {nproc}: this machine has {cores} CPU core(s) and each rank of a CPU run computes on one (at most --nproc {cores}; torchrun --nproc-per-node starts more if you mean them to share)"
        );
    }
    Ok(())
}

/// How long the other workers get to stop on their own after one failed (exited with an
/// error, or died): a dead peer's connections close at once and a stopped one's heartbeat is
/// stale in seconds, so its peers have named it by then. Waiting the whole `ddp_timeout` kept a
/// job whose rank died at start-up (its peers still at the rendezvous) or stalled for as long
/// again — half an hour at the default — with nothing left to learn.
const AFTER_A_FAILURE: Duration = Duration::from_secs(10);

/// Runs this program `nproc` times with `args` (the command line without `--nproc`), as ranks
/// 0..nproc of one run on this machine. When a worker fails, the others get
/// [`AFTER_A_FAILURE`] to stop on their own (their next collective fails and names it), or
/// `grace` when the run is stopping on a signal or while `writing_checkpoint` (rank 0's
/// checkpoint is not cut short), and are then killed. Returns the first failure, naming the
/// rank.
///
/// Signals: the workers run in their own process group, so a signal sent to the job's group
/// (Ctrl-C, a scheduler's SIGTERM) reaches this launcher alone, which passes each on to every
/// worker once: the first makes them finish the step (rank 0 checkpoints), a second stops
/// them at once, as for one process. Had they shared the group, each would get a signal
/// twice — from the group and from the launcher — and the second would stop them before any
/// checkpoint. A worker whose launcher dies gets SIGTERM (PR_SET_PDEATHSIG), never runs on
/// alone.
pub fn run_local_workers(
    nproc: usize,
    args: &[OsString],
    grace: Duration,
    writing_checkpoint: impl Fn() -> bool,
) -> anyhow::Result<()> {
    let port = local_rendezvous_port(|name| std::env::var(name).ok())?;
    let program = std::env::current_exe().context("cannot find this program's path")?;
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot listen for SIGINT and SIGTERM")?;
    let mut received: Option<i32> = None;
    tracing::info!("starting {nproc} local workers (rendezvous 127.0.0.1:{port})");
    let mut workers: Vec<(usize, Child)> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        let mut command = Command::new(&program);
        command.process_group(0);
        // SAFETY: prctl is async-signal-safe, as a pre-exec hook must be.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            })
        };
        let child = command
            .args(args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(error) => {
                // The workers already started would wait for this one until their timeout.
                for (_, started) in &mut workers {
                    let _ = started.kill();
                    let _ = started.wait();
                }
                return Err(error)
                    .with_context(|| format!("cannot start worker {rank} ({})", program.display()));
            }
        };
        workers.push((rank, child));
    }
    let mut first_failure: Option<(usize, String)> = None;
    let mut died = false;
    // How long the others get after the first failure (see above).
    let mut wait = grace;
    // Whether every worker that failed stopped on a signal (128 + SIGTERM or SIGINT): one sent
    // to a worker rather than to this launcher stops every rank after the same step too.
    let mut stopped_on: Option<i32> = None;
    let mut only_stopped = true;
    let mut failed_at: Option<Instant> = None;
    // Ranks still running `wait` after the first failure, killed: most likely stalled.
    let mut killed: Vec<usize> = Vec::new();
    while !workers.is_empty() {
        for signal in signals.pending() {
            received = Some(signal);
            for (_, child) in &workers {
                // SAFETY: signalling a child this launcher started and has not reaped.
                unsafe { libc::kill(child.id() as i32, signal) };
            }
        }
        let mut still_running = Vec::with_capacity(workers.len());
        for (rank, mut child) in workers {
            match child.try_wait()? {
                Some(status) if !status.success() => {
                    if first_failure.is_none() {
                        // Killed (SIGKILL, a crash): it left no message, the others did not end it.
                        died = status.signal().is_some();
                        first_failure = Some((rank, describe(status)));
                    }
                    failed_at.get_or_insert_with(Instant::now);
                    match status
                        .code()
                        .map(|code| code - 128)
                        .filter(|s| [SIGINT, SIGTERM].contains(s))
                    {
                        Some(signal) => {
                            stopped_on.get_or_insert(signal);
                        }
                        None => only_stopped = false,
                    }
                }
                Some(_) => {}
                None => still_running.push((rank, child)),
            }
        }
        workers = still_running;
        // Every failure so far a stop on a signal (the ranks finish the step and checkpoint),
        // or rank 0 writing a checkpoint: the long grace.
        wait = if received.is_some() || only_stopped || writing_checkpoint() {
            grace
        } else {
            grace.min(AFTER_A_FAILURE)
        };
        if failed_at.is_some_and(|at| at.elapsed() > wait) {
            for (rank, child) in &mut workers {
                tracing::warn!(
                    "worker rank {rank} still runs {wait:?} after rank {} ended; killing it",
                    first_failure.as_ref().map_or(0, |(r, _)| *r)
                );
                let _ = child.kill();
                let _ = child.wait();
                killed.push(*rank);
                only_stopped = false;
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if only_stopped {
        received = received.or(stopped_on);
    }
    match (first_failure, received) {
        (Some(_), Some(signal)) => Err(Interrupted {
            signal,
            message: format!(
                "the {nproc} workers stopped on {}: rank 0's message above says whether it wrote a checkpoint (if it did, continue with --resume --nproc {nproc})",
                Interrupted::name(signal)
            ),
        }
        .into()),
        (Some((rank, status)), None) if !killed.is_empty() => {
            let ranks: Vec<String> = killed.iter().map(usize::to_string).collect();
            if died {
                bail!(
                    "worker rank {rank} of {nproc} failed ({status}); rank(s) {} still ran {wait:?} later and were killed",
                    ranks.join(", ")
                )
            }
            // The first to end is often the one that found a peer stalled, not the culprit.
            bail!(
                "worker rank {rank} of {nproc} ended first ({status}; its message above says why), and rank(s) {} still ran {wait:?} later and were killed (a rank that stalls is named in rank {rank}'s message)",
                ranks.join(", ")
            )
        }
        (Some((rank, status)), None) => {
            bail!("worker rank {rank} of {nproc} failed ({status}); see its messages above")
        }
        (None, _) => Ok(()),
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> anyhow::Result<Option<LaunchEnv>> {
        let table: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LaunchEnv::from_vars(|name| table.get(name).cloned())
    }

    #[test]
    fn a_single_process_command_is_refused_as_one_of_several_ranks() {
        let refused = |size: &str| {
            refuse_a_distributed_launch("eval", |name| (name == "WORLD_SIZE").then(|| size.to_string()))
        };
        let error = refused("2").unwrap_err().to_string();
        assert!(
            error.contains("`crpo-host eval`") && error.contains("WORLD_SIZE=2"),
            "{error}"
        );
        assert!(refused("1").is_ok(), "one rank is one process");
        assert!(refuse_a_distributed_launch("eval", |_| None).is_ok());
        let srun = refuse_a_distributed_launch("eval", |name| {
            (name == "SLURM_STEP_NUM_TASKS").then(|| "2".to_string())
        });
        assert!(srun.unwrap_err().to_string().contains("SLURM_STEP_NUM_TASKS=2"));
    }

    #[test]
    fn nproc_takes_a_set_master_port_and_refuses_inside_another_launch() {
        let port = |pairs: &[(&str, &str)]| {
            let table: HashMap<&str, &str> = pairs.iter().copied().collect();
            local_rendezvous_port(|name| table.get(name).map(|v| v.to_string()))
        };
        let free = free_port().unwrap().to_string();
        assert_eq!(port(&[("MASTER_PORT", &free)]).unwrap().to_string(), free);
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = held.local_addr().unwrap().port().to_string();
        let error = port(&[("MASTER_PORT", &taken)]).unwrap_err().to_string();
        assert!(error.contains("in use"), "{error}");
        assert!(port(&[]).unwrap() > 0);
        let error = port(&[("MASTER_PORT", "http")]).unwrap_err().to_string();
        assert!(error.contains("MASTER_PORT=`http`"), "{error}");
        let error = port(&[("SLURM_STEP_NUM_TASKS", "2")]).unwrap_err().to_string();
        assert!(error.contains("SLURM_STEP_NUM_TASKS=2 srun tasks"), "{error}");
        assert!(
            port(&[("SLURM_STEP_NUM_TASKS", "1")]).is_ok(),
            "one task: --nproc on its node"
        );
        assert!(
            port(&[("SLURM_NTASKS", "8")]).is_ok(),
            "an sbatch -n 8 script's own process"
        );
        for name in ["RANK", "WORLD_SIZE"] {
            let error = port(&[(name, "4")]).unwrap_err().to_string();
            assert!(
                error.contains(&format!("{name}=4")) && error.contains("drop --nproc"),
                "{error}"
            );
        }
    }

    #[test]
    fn local_ranks_take_a_core_or_a_gpu_each() {
        assert!(check_local_ranks(2, false, 0, 2).is_ok());
        assert!(check_local_ranks(4, true, 4, 2).is_ok());
        let error = check_local_ranks(1000, false, 0, 2).unwrap_err().to_string();
        assert!(
            error.contains("--nproc 1000") && error.contains("2 CPU core(s)"),
            "{error}"
        );
        let error = check_local_ranks(3, true, 2, 64).unwrap_err().to_string();
        assert!(
            error.contains("2 GPU(s)") && error.contains("at most --nproc 2"),
            "{error}"
        );
        assert!(check_local_ranks(0, false, 0, 2).is_err());
    }

    #[test]
    fn reads_torchruns_variables_and_names_what_is_wrong() {
        assert_eq!(from(&[]).unwrap(), None);
        let full = [
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
        ];
        assert_eq!(
            from(&full).unwrap(),
            Some(LaunchEnv {
                rank: 1,
                world_size: 2,
                local_rank: 1,
                master_addr: "10.0.0.1".into(),
                master_port: 29500,
                agent_store: false,
                restart: 0,
            })
        );
        let without = |name: &str| {
            from(
                &full
                    .iter()
                    .copied()
                    .filter(|(k, _)| *k != name)
                    .collect::<Vec<_>>(),
            )
        };
        for name in VARS {
            let error = without(name).unwrap_err().to_string();
            assert!(error.contains(name), "{name}: {error}");
        }
        let with = |name: &str, value: &'static str| {
            from(
                &full
                    .iter()
                    .map(|&(k, v)| if k == name { (k, value) } else { (k, v) })
                    .collect::<Vec<_>>(),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(with("RANK", "2").contains("not below WORLD_SIZE"));
        assert!(with("WORLD_SIZE", "0").contains("WORLD_SIZE=0: a run has at least one process"));
        assert!(with("RANK", "-1").contains("RANK=`-1`"));
        assert!(with("MASTER_PORT", "0").contains("not a port"));
        assert!(with("MASTER_PORT", "port").contains("MASTER_PORT=`port`"));
        assert!(with("MASTER_ADDR", " ").contains("MASTER_ADDR is empty"));
        assert!(with("WORLD_SIZE", "4294967297").contains("more processes than any run has"));
        let local = |value: &str| {
            let mut vars = full.to_vec();
            vars.push(("LOCAL_WORLD_SIZE", value));
            from(&vars)
        };
        assert!(local("2").is_ok());
        for wrong in ["0", "1", "3", "abc"] {
            let error = local(wrong).unwrap_err().to_string();
            assert!(error.contains("LOCAL_WORLD_SIZE"), "{wrong}: {error}");
        }
    }
}
