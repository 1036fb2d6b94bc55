//! This process's place in a data-parallel run: its c10d process group, with every
//! collective bounded by `run.ddp_timeout` and, when one fails, the rank to blame named.
//!
//! Each rank keeps two keys in the rendezvous store: a heartbeat (a background thread writes
//! the time every half second, so a dead or stopped process goes stale) and its position (the
//! collective it is in and the step). A failed collective waits for a dead peer's heartbeat to
//! go stale, then names the ranks that are stale or behind.

use super::launch::LaunchEnv;
use crpo_torch_ext::c10d::{Backend, GradientSync, ProcessGroup, Rendezvous};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tch::Tensor;

const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
/// A heartbeat older than this is a dead or stopped process.
const STALE_AFTER: Duration = Duration::from_secs(2);

pub struct World {
    group: Arc<ProcessGroup>,
    pub rank: usize,
    pub size: usize,
    /// Where the run is, for the position key ("step 3").
    stage: std::cell::RefCell<String>,
    /// Collectives entered so far: ranks that entered fewer are behind.
    entered: Cell<u64>,
    /// Time spent in each kind of collective since the last [`World::take_communication_times`].
    spent: std::cell::RefCell<BTreeMap<String, Duration>>,
    heartbeat: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    /// Ends the process when a collective outlives its bound (see [`CollectiveWatchdog`]).
    watchdog: CollectiveWatchdog,
    rendezvous: String,
    /// The gradient sums hooked onto the backward pass, made at the first update.
    gradient_sync: std::cell::OnceCell<GradientSync>,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn alive_key(rank: usize) -> String {
    format!("crpo/alive/{rank}")
}

fn position_key(rank: usize) -> String {
    format!("crpo/position/{rank}")
}

/// Time past `run.ddp_timeout` the rendezvous is given before the watchdog ends the process.
const JOIN_GRACE: Duration = Duration::from_secs(5);

/// Ends the process, naming the address, if the rendezvous has not completed within `timeout`
/// (and a grace): libtorch's store client waits without end on a port another program holds
/// (it reads an answer that never comes), and its connection retries overrun the timeout.
/// Returns the flag to set once joined.
fn rendezvous_watchdog(env: &LaunchEnv, timeout: Duration) -> Arc<AtomicBool> {
    let joined = Arc::new(AtomicBool::new(false));
    let flag = joined.clone();
    let (rank, world_size) = (env.rank, env.world_size);
    // Under torchrun's agent store, rank 0 hosts nothing.
    let hosts_the_store = rank == 0 && !env.agent_store;
    let address = format!("{}:{}", env.master_addr, env.master_port);
    let spawned = std::thread::Builder::new()
        .name("crpo-rendezvous-watchdog".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            while started.elapsed() < timeout + JOIN_GRACE {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let question = if hosts_the_store {
                // Rank 0 hosts the store on this machine and reaches it at MASTER_ADDR.
                "this is rank 0, which hosts the rendezvous: is MASTER_ADDR an address of this machine, is every rank started, and is that port free (not another program's)?"
            } else {
                "is rank 0 running there, is every rank started, and is that port rank 0's (not another program's)?"
            };
            eprintln!(
                "error: distributed start-up (rank {rank} of {world_size}): no rendezvous at {address} within {:?} (run.ddp_timeout): {question}",
                timeout
            );
            // SAFETY: ends the process at once; libtorch's threads are mid-call, so exit
            // handlers and destructors are not run under them.
            unsafe { libc::_exit(1) };
        });
    if spawned.is_err() {
        tracing::warn!("cannot start the rendezvous watchdog: start-up waits as long as libtorch does");
    }
    joined
}

/// Time past `run.ddp_timeout` a collective (with the store calls around it and the search
/// for the rank to blame) is given before the watchdog ends the process.
const COLLECTIVE_GRACE: Duration = Duration::from_secs(15);

/// Bounds every collective from outside: libtorch's store client reads its answer without a
/// time limit, so when rank 0 (the store's host) is stopped rather than dead, a peer's store
/// call would wait forever, past `run.ddp_timeout`. The watchdog thread ends the process
/// naming the store's host once a collective outlives its deadline.
struct CollectiveWatchdog {
    /// The deadline of the collective in progress and the message to end with.
    armed: Arc<std::sync::Mutex<Option<(Instant, String)>>>,
}

impl CollectiveWatchdog {
    fn start() -> Self {
        let armed: Arc<std::sync::Mutex<Option<(Instant, String)>>> = Arc::default();
        let watched = armed.clone();
        let spawned = std::thread::Builder::new()
            .name("crpo-collective-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(200));
                let expired = watched.lock().ok().and_then(|armed| {
                    armed
                        .as_ref()
                        .filter(|(at, _)| Instant::now() > *at)
                        .map(|(_, m)| m.clone())
                });
                if let Some(message) = expired {
                    eprintln!("error: {message}");
                    // SAFETY: ends the process at once; the main thread is inside libtorch,
                    // so exit handlers and destructors are not run under it.
                    unsafe { libc::_exit(1) };
                }
            });
        if spawned.is_err() {
            tracing::warn!("cannot start the collective watchdog: a stalled store host is waited for as long as libtorch does");
        }
        CollectiveWatchdog { armed }
    }

    /// Arms the watchdog until the returned guard drops.
    fn arm(&self, deadline: Instant, message: String) -> Armed<'_> {
        if let Ok(mut armed) = self.armed.lock() {
            *armed = Some((deadline, message));
        }
        Armed(self)
    }
}

/// The watchdog armed for one collective; disarmed when dropped.
struct Armed<'a>(&'a CollectiveWatchdog);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        if let Ok(mut armed) = self.0.armed.lock() {
            *armed = None;
        }
    }
}

impl World {
    /// Joins the group `env` describes (Gloo for CPU tensors, NCCL for CUDA ones), waiting up
    /// to `timeout` for every rank.
    pub fn join(env: &LaunchEnv, backend: Backend, timeout: Duration) -> anyhow::Result<Self> {
        // A name that does not resolve fails now, not after the whole timeout of retries.
        std::net::ToSocketAddrs::to_socket_addrs(&(env.master_addr.as_str(), env.master_port)).map_err(
            |e| {
                anyhow::anyhow!(
                    "distributed start-up (rank {} of {}): MASTER_ADDR=`{}` does not resolve: {e}",
                    env.rank,
                    env.world_size,
                    env.master_addr
                )
            },
        )?;
        let loopback = matches!(env.master_addr.as_str(), "127.0.0.1" | "localhost" | "::1");
        let joined = rendezvous_watchdog(env, timeout);
        let group = ProcessGroup::join(&Rendezvous {
            host: env.master_addr.clone(),
            port: env.master_port,
            host_store: env.rank == 0 && !env.agent_store,
            prefix: format!("crpo/attempt-{}", env.restart),
            bind_host: if loopback {
                "127.0.0.1".into()
            } else {
                String::new()
            },
            rank: env.rank,
            world_size: env.world_size,
            backend,
            timeout,
        })
        .map_err(|e| {
            // libtorch's words when a program that is no rendezvous store (a web server, a
            // proxy) answers at the address.
            let stranger = if e.contains("Ping failed") {
                format!(
                    " (what answers at {}:{} is not a rendezvous store: another program holds that port there; choose another MASTER_PORT, or check MASTER_ADDR)",
                    env.master_addr, env.master_port
                )
            } else {
                String::new()
            };
            anyhow::anyhow!(
                "distributed start-up (rank {} of {}): {e}{stranger}",
                env.rank,
                env.world_size
            )
        })?;
        joined.store(true, Ordering::Relaxed);
        let group = Arc::new(group);
        let stop = Arc::new(AtomicBool::new(false));
        let beating = {
            let (group, stop) = (group.clone(), stop.clone());
            let key = alive_key(env.rank);
            std::thread::Builder::new()
                .name("crpo-heartbeat".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if group.store_set(&key, now_ms().to_string().as_bytes()).is_err() {
                            return;
                        }
                        std::thread::sleep(HEARTBEAT_EVERY);
                    }
                })?
        };
        tracing::info!(
            "distributed: rank {} of {} (local rank {}) over {} at {}:{}",
            env.rank,
            env.world_size,
            env.local_rank,
            backend.name(),
            env.master_addr,
            env.master_port
        );
        Ok(World {
            group,
            rank: env.rank,
            size: env.world_size,
            stage: std::cell::RefCell::new("start-up".into()),
            entered: Cell::new(0),
            spent: Default::default(),
            heartbeat: Some((stop, beating)),
            watchdog: CollectiveWatchdog::start(),
            rendezvous: format!("{}:{}", env.master_addr, env.master_port),
            gradient_sync: std::cell::OnceCell::new(),
        })
    }

    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Names where the run is (for a peer's error message), e.g. "step 3".
    pub fn set_stage(&self, stage: String) {
        *self.stage.borrow_mut() = stage;
    }

    /// Seconds spent in each kind of collective (by its description) since the last call.
    pub fn take_communication_times(&self) -> BTreeMap<String, f64> {
        std::mem::take(&mut *self.spent.borrow_mut())
            .into_iter()
            .map(|(what, spent)| (what, spent.as_secs_f64()))
            .collect()
    }

    /// Runs one collective: records the position first, and on failure names the ranks to
    /// blame.
    fn collective<T>(
        &self,
        what: &str,
        f: impl FnOnce(&ProcessGroup) -> Result<T, String>,
    ) -> anyhow::Result<T> {
        let entered = self.entered.get() + 1;
        self.entered.set(entered);
        let position = format!("{entered}\t{}, {what}", self.stage.borrow());
        let bound = self.group.timeout + COLLECTIVE_GRACE;
        let stalled = if self.rank == 0 {
            "a peer stalled and libtorch did not time out".to_string()
        } else {
            format!("no rank answered; most likely {}", self.store_host_gone())
        };
        // Disarmed however the collective ends (a panic caught above included).
        let _armed = self.watchdog.arm(
            Instant::now() + bound,
            format!(
                "rank {} of {} ({}, {what}): no answer within {bound:?} (run.ddp_timeout and a grace): {stalled}",
                self.rank,
                self.size,
                self.stage.borrow()
            ),
        );
        // Best effort: a store that is gone shows up in the collective's own error.
        let _ = self
            .group
            .store_set(&position_key(self.rank), position.as_bytes());
        let started = Instant::now();
        let result = f(&self.group);
        let waited = started.elapsed();
        *self.spent.borrow_mut().entry(what.to_string()).or_default() += waited;
        result.map_err(|error| {
            anyhow::anyhow!(
                "rank {} of {} ({}, {what}): {}; {error}",
                self.rank,
                self.size,
                self.stage.borrow(),
                self.blame(entered, waited)
            )
        })
    }

    /// Which peers stopped the group: stale heartbeats (dead or stopped), else ranks behind,
    /// else — every peer alive and caught up by now — a wait past `run.ddp_timeout` (one rank
    /// was slower than that to get here) or the transport. `waited`: the collective's time.
    fn blame(&self, entered: u64, waited: Duration) -> String {
        // A peer that just died still has a fresh heartbeat: let it go stale.
        std::thread::sleep(STALE_AFTER + HEARTBEAT_EVERY);
        if self.group.set_store_timeout(STALE_AFTER * 2).is_err() {
            return self.store_host_gone();
        }
        let mut stale = Vec::new();
        let mut behind = Vec::new();
        for rank in (0..self.size).filter(|&r| r != self.rank) {
            let (Ok(alive), Ok(position)) = (
                self.group.store_get(&alive_key(rank)),
                self.group.store_get(&position_key(rank)),
            ) else {
                return self.store_host_gone();
            };
            let position = position.map(|p| String::from_utf8_lossy(&p).into_owned());
            let (their_entered, where_) = position
                .as_deref()
                .and_then(|p| p.split_once('\t'))
                .map_or((0, "start-up".to_string()), |(n, at)| {
                    (n.parse().unwrap_or(0), at.to_string())
                });
            let age_ms = alive
                .and_then(|a| String::from_utf8_lossy(&a).parse::<u128>().ok())
                .map(|at| now_ms().saturating_sub(at));
            if age_ms.is_none_or(|age| age > STALE_AFTER.as_millis()) {
                stale.push(format!(
                    "rank {rank} stopped responding (no heartbeat for {}; the last collective it entered: {where_})",
                    age_ms.map_or("ever".to_string(), |ms| format!("{:.1} s", ms as f64 / 1000.0))
                ));
            } else if their_entered < entered {
                behind.push(format!(
                    "rank {rank} has not reached this collective (the last it entered: {where_})"
                ));
            }
        }
        let _ = self.group.set_store_timeout(self.group.timeout);
        match (stale.is_empty(), behind.is_empty()) {
            (false, _) => stale.join("; "),
            (true, false) => format!(
                "{} (waited {:?}: run.ddp_timeout)",
                behind.join("; "),
                self.group.timeout
            ),
            (true, true) if waited >= self.group.timeout => format!(
                "every peer is alive and has caught up since: this rank waited {waited:.1?} for one that came later than run.ddp_timeout ({:?}) allows; raise run.ddp_timeout above the longest a rank may take to reach a collective after the others (its rollouts, its checkpoint)",
                self.group.timeout
            ),
            (true, true) => "no peer is stale or behind: the transport failed".to_string(),
        }
    }

    fn store_host_gone(&self) -> String {
        format!(
            "rank 0, which hosts the rendezvous store at {}, stopped responding (died or stalled)",
            self.rendezvous
        )
    }

    /// Sums tensors in place across ranks, bucketed.
    pub fn all_reduce_sum(&self, what: &str, tensors: &[&Tensor]) -> anyhow::Result<()> {
        self.collective(what, |group| group.all_reduce_sum(tensors))
    }

    /// The gradient sums of `parameters` hooked onto the backward (made once: the same
    /// parameters every time).
    fn gradient_sync(&self, parameters: &[&Tensor]) -> anyhow::Result<&GradientSync> {
        if let Some(sync) = self.gradient_sync.get() {
            return Ok(sync);
        }
        let sync = GradientSync::new(self.group.clone(), parameters).map_err(|e| anyhow::anyhow!(e))?;
        Ok(self.gradient_sync.get_or_init(|| sync))
    }

    /// The next backward pass of `parameters` starts sending its gradients' sums as they
    /// become final (the update's last pass on this rank).
    pub fn arm_gradient_sums(&self, parameters: &[&Tensor]) -> anyhow::Result<()> {
        self.gradient_sync(parameters)?.arm();
        Ok(())
    }

    /// Finishes the sums the armed backward started (or does them all, on a rank that ran no
    /// pass): every rank then holds the update's whole gradient.
    pub fn finish_gradient_sums(&self, what: &str, parameters: &[&Tensor]) -> anyhow::Result<()> {
        let sync = self.gradient_sync(parameters)?;
        self.collective(what, |_| sync.finish()).map(|_| ())
    }

    /// Rank 0's tensors into every rank's.
    pub fn broadcast(&self, what: &str, tensors: &[&Tensor]) -> anyhow::Result<()> {
        self.collective(what, |group| group.broadcast(tensors, 0))
    }

    /// Every rank's bytes, in rank order.
    pub fn all_gather(&self, what: &str, bytes: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
        self.collective(what, |group| group.all_gather_bytes(bytes))
    }

    /// Every rank's result of the same stage: this rank's error if it failed, else the first
    /// failed rank's error, so every rank stops with the reason instead of waiting.
    pub fn agree<T>(&self, what: &str, local: anyhow::Result<T>) -> anyhow::Result<T> {
        let report = match &local {
            Ok(_) => Vec::new(),
            Err(error) => format!("{error:#}").into_bytes(),
        };
        let reports = self.all_gather(what, &report)?;
        let local = local?;
        if let Some((rank, message)) = reports.iter().enumerate().find(|(_, m)| !m.is_empty()) {
            anyhow::bail!(
                "rank {rank} failed ({what}): {}",
                String::from_utf8_lossy(message)
            );
        }
        Ok(local)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some((stop, beating)) = self.heartbeat.take() {
            stop.store(true, Ordering::Relaxed);
            // Not joined when it is stuck in a store call to a stalled store host: the
            // process is ending either way.
            let deadline = Instant::now() + HEARTBEAT_EVERY * 4;
            while !beating.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if beating.is_finished() {
                let _ = beating.join();
            }
        }
    }
}
