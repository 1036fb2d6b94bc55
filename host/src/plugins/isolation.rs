//! Where a reward objective runs, and how long a call may take.
//!
//! In process (the default) an objective is a function call; a plugin not marked cheap gets a
//! per-call timeout (the call runs on a thread of its own, abandoned when it overruns). With
//! `isolation = "process"` the objective runs in a child `crpo-host reward-worker` that speaks
//! JSON lines over a pipe: a crash, an abort or a hang there (per-call timeout) kills only the
//! worker, is retried on a fresh one as configured, and otherwise fails the step with an error
//! naming the objective — the trainer itself never goes down with it.

use super::trust::Trust;
use crate::train::config::PluginPin;
use crpo_sdk::{Example, PluginError, RewardObjective, Score, ScoreRequest};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where an objective runs (`[[reward.objectives]] isolation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    #[default]
    InProcess,
    Process,
}

/// How an objective is run: isolation, per-call timeout and retries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Execution {
    pub isolation: Isolation,
    /// Per-call limit; `None` takes [`DEFAULT_TIMEOUT`] for workers and slow in-process
    /// plugins, and no limit for cheap in-process ones.
    pub timeout: Option<Duration>,
    /// Fresh workers tried after one crashed or hung, before the step fails.
    pub retries: usize,
}

/// `seconds` as a per-call limit, when it can be one: finite, above 0 and at most 1e9 (a
/// longer one is no limit, and overflows what a deadline can hold).
pub fn timeout_of(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && seconds > 0.0 && seconds <= 1e9).then(|| Duration::from_secs_f64(seconds))
}

/// The per-call limit when the config sets none (a model call or a remote check may be slow).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs a slow in-process objective on its own thread, giving up after `timeout`.
pub struct TimedObjective {
    pub inner: Arc<dyn RewardObjective>,
    pub timeout: Duration,
}

impl RewardObjective for TimedObjective {
    fn score_group(&self, request: &ScoreRequest<'_>) -> crpo_sdk::Result<Vec<Score>> {
        let owned = OwnedRequest::from(request);
        let inner = Arc::clone(&self.inner);
        let (send, receive) = mpsc::channel();
        std::thread::Builder::new()
            .name("reward-call".into())
            .spawn(move || {
                let _ = send.send(owned.score_with(&*inner));
            })
            .map_err(|e| PluginError::failed(format!("cannot start the call's thread: {e}")))?;
        match receive.recv_timeout(self.timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(PluginError::failed(format!(
                "no answer within {} (timeout_s); the call is abandoned",
                seconds(self.timeout)
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(PluginError::failed("the call panicked")),
        }
    }
}

fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

/// A request with its data owned, to send to a thread or a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnedRequest {
    example: Example,
    prompt: String,
    completions: Vec<String>,
    #[serde(default)]
    completion_ids: Vec<Vec<u32>>,
}

impl From<&ScoreRequest<'_>> for OwnedRequest {
    fn from(request: &ScoreRequest<'_>) -> Self {
        OwnedRequest {
            example: request.example.clone(),
            prompt: request.prompt.to_string(),
            completions: request.completions.iter().map(|c| c.to_string()).collect(),
            completion_ids: request.completion_ids.to_vec(),
        }
    }
}

impl OwnedRequest {
    fn score_with(&self, objective: &dyn RewardObjective) -> crpo_sdk::Result<Vec<Score>> {
        let completions: Vec<&str> = self.completions.iter().map(String::as_str).collect();
        objective.score_group(
            &ScoreRequest::new(&self.example, &self.prompt, &completions)
                .with_completion_ids(&self.completion_ids),
        )
    }
}

/// A score as it crosses the pipe (a non-finite value travels as `null`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireScore {
    value: Option<f64>,
    diagnostics: Vec<(String, f32)>,
    answer: Option<String>,
}

impl From<&Score> for WireScore {
    fn from(score: &Score) -> Self {
        WireScore {
            value: Some(f64::from(score.value)).filter(|v| v.is_finite()),
            diagnostics: score.diagnostics.clone(),
            answer: score.answer.clone(),
        }
    }
}

impl From<WireScore> for Score {
    fn from(wire: WireScore) -> Self {
        Score {
            value: wire.value.map_or(f32::NAN, |v| v as f32),
            diagnostics: wire.diagnostics,
            answer: wire.answer,
        }
    }
}

/// The worker's first line: which plugin to load, from where, under which trust.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInit {
    pub plugin_dirs: Vec<PathBuf>,
    pub pins: Vec<PluginPin>,
    pub allow_insecure: bool,
    pub plugin: String,
    pub options: serde_json::Value,
}

/// A worker's answer to a line: scores, or the plugin's own error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Reply {
    Ready,
    Scores(Vec<WireScore>),
    Error(String),
}

/// `crpo-host reward-worker`: loads the objective named by the first line of stdin, then
/// answers each request line with a reply line, until stdin closes. The protocol has stdout
/// to itself: whatever the plugin prints goes to stderr.
pub fn serve_worker() -> anyhow::Result<()> {
    // SAFETY: plain fd calls before any thread is started or any output written: the
    // protocol keeps a copy of stdout, and fd 1 becomes stderr for everything else.
    let protocol = unsafe {
        let copy = libc::dup(1);
        if copy < 0 || libc::dup2(2, 1) < 0 {
            anyhow::bail!("reward-worker: cannot set up its output");
        }
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(copy)
    };
    let mut out = std::io::LineWriter::new(protocol);
    let mut reply = |reply: &Reply| -> anyhow::Result<()> {
        writeln!(out, "{}", serde_json::to_string(reply)?)?;
        Ok(())
    };
    let mut lines = std::io::stdin().lock().lines();
    let Some(first) = lines.next().transpose()? else {
        return Ok(());
    };
    let init: WorkerInit = serde_json::from_str(&first)?;
    let trust = Trust {
        pins: init.pins.clone(),
        allow_insecure: init.allow_insecure,
    };
    let objective = match super::PluginRegistry::load_trusted(&init.plugin_dirs, &trust)
        .map_err(|e| e.to_string())
        .and_then(|registry| {
            registry
                .reward(&init.plugin)
                .map_err(|e| e.to_string())?
                .plugin()
                .create(&init.options)
                .map_err(|e| e.to_string())
        }) {
        Ok(objective) => objective,
        Err(message) => return reply(&Reply::Error(message)),
    };
    reply(&Reply::Ready)?;
    for line in lines {
        let request: OwnedRequest = serde_json::from_str(&line?)?;
        match request.score_with(&*objective) {
            // Checked here: JSON has no inf or NaN, and ±inf crossed as null (read as NaN).
            Ok(scores) => match crpo_sdk::check_scores(&scores, scores.len()) {
                Ok(()) => reply(&Reply::Scores(scores.iter().map(WireScore::from).collect()))?,
                Err(message) => reply(&Reply::Error(message))?,
            },
            Err(error) => reply(&Reply::Error(error.to_string()))?,
        }
    }
    Ok(())
}

/// A running worker: its process, its stdin, and its stdout's lines as they arrive.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<std::io::Result<String>>,
}

/// Why a call to a worker got no reply: retried on a fresh worker.
struct WorkerFault(String);

impl Worker {
    fn spawn(init: &WorkerInit, timeout: Duration) -> Result<Self, WorkerFault> {
        let exe = worker_executable();
        let mut child = Command::new(&exe)
            .arg("reward-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| WorkerFault(format!("cannot start {}: {e}", exe.display())))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("reward-worker-reader".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    if send.send(line).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| WorkerFault(format!("cannot start the reader thread: {e}")))?;
        let mut worker = Worker { child, stdin, lines };
        let init_line = serde_json::to_string(init).map_err(|e| WorkerFault(e.to_string()))?;
        // Loading libtorch and the plugin takes a moment: the start gets the call's limit
        // or a minute, whichever is longer.
        match worker.exchange(&init_line, timeout.max(Duration::from_secs(60)))? {
            Reply::Ready => Ok(worker),
            Reply::Error(message) => Err(WorkerFault(format!("the worker cannot load it: {message}"))),
            Reply::Scores(_) => Err(WorkerFault("the worker answered out of turn".into())),
        }
    }

    /// Sends one line and waits up to `timeout` for the reply line.
    fn exchange(&mut self, line: &str, timeout: Duration) -> Result<Reply, WorkerFault> {
        if let Err(error) = writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush()) {
            return Err(WorkerFault(format!("{} ({error})", self.ended())));
        }
        match self.lines.recv_timeout(timeout) {
            Ok(Ok(text)) => serde_json::from_str(&text)
                .map_err(|e| WorkerFault(format!("the worker's reply is not understood ({e}): {text}"))),
            Ok(Err(error)) => Err(WorkerFault(format!("cannot read the worker's reply: {error}"))),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(WorkerFault(format!(
                    "no answer within {} (timeout_s); the worker was killed",
                    seconds(timeout)
                )))
            }
            Err(RecvTimeoutError::Disconnected) => Err(WorkerFault(self.ended())),
        }
    }

    /// How the worker ended (it closed its output).
    fn ended(&mut self) -> String {
        match self.child.wait() {
            Ok(status) => match std::os::unix::process::ExitStatusExt::signal(&status) {
                Some(signal) => format!("the worker process died of signal {signal}"),
                None => format!("the worker process exited ({status})"),
            },
            Err(error) => format!("the worker process is gone ({error})"),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary that serves as a worker: `CRPO_WORKER_EXE`, else `crpo-host-runtime` beside this
/// executable (or one directory up, from a test binary in `deps/`).
fn worker_executable() -> PathBuf {
    if let Some(path) = std::env::var_os("CRPO_WORKER_EXE") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    [dir.clone(), dir.parent().map(PathBuf::from).unwrap_or_default()]
        .into_iter()
        .map(|d| d.join("crpo-host-runtime"))
        .find(|p| p.exists())
        .unwrap_or_else(|| dir.join("crpo-host-runtime"))
}

/// An objective served by a worker process, started on first use and restarted after a
/// crash or a hang.
pub struct IsolatedObjective {
    init: WorkerInit,
    timeout: Duration,
    retries: usize,
    worker: Mutex<Option<Worker>>,
}

impl IsolatedObjective {
    /// Starts the worker (so a plugin that cannot load fails the run's start, not a step).
    pub fn start(init: WorkerInit, timeout: Duration, retries: usize) -> crpo_sdk::Result<Self> {
        let worker =
            Worker::spawn(&init, timeout).map_err(|WorkerFault(message)| PluginError::failed(message))?;
        Ok(IsolatedObjective {
            init,
            timeout,
            retries,
            worker: Mutex::new(Some(worker)),
        })
    }
}

/// Why a failed call was not retried.
const NOT_RETRIED: &str = "; not retried: a stop was asked for (SIGTERM or Ctrl-C)";

impl RewardObjective for IsolatedObjective {
    fn score_group(&self, request: &ScoreRequest<'_>) -> crpo_sdk::Result<Vec<Score>> {
        let line = serde_json::to_string(&OwnedRequest::from(request))
            .map_err(|e| PluginError::failed(format!("cannot encode the request: {e}")))?;
        let mut slot = self
            .worker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut faults: Vec<String> = Vec::new();
        let mut stopped = "";
        for attempt in 0..=self.retries {
            // A stop asked for (SIGTERM, Ctrl-C) lets the call in flight finish (within
            // timeout_s), so a busy worker's step still completes, but starts no retry: a
            // failing worker retried up to `retries` × timeout_s past a scheduler's grace.
            if attempt > 0 && crate::interrupt::stop_requested() {
                stopped = NOT_RETRIED;
                break;
            }
            let reply = match slot.take() {
                Some(worker) => Ok(worker),
                None => Worker::spawn(&self.init, self.timeout),
            }
            .and_then(|mut worker| {
                let reply = worker.exchange(&line, self.timeout)?;
                *slot = Some(worker);
                Ok(reply)
            });
            match reply {
                Ok(Reply::Scores(scores)) => return Ok(scores.into_iter().map(Score::from).collect()),
                Ok(Reply::Error(message)) => return Err(PluginError::failed(message)),
                Ok(Reply::Ready) => faults.push("the worker answered out of turn".to_string()),
                Err(WorkerFault(message)) => {
                    if faults.len() < self.retries && !crate::interrupt::stop_requested() {
                        tracing::warn!(
                            "reward worker for `{}`: {message}; retrying on a fresh worker",
                            self.init.plugin
                        );
                    }
                    faults.push(message);
                }
            }
        }
        Err(PluginError::failed(format!(
            "in its worker process, {} attempt(s) failed: {}{stopped}",
            faults.len(),
            faults.join("; ")
        )))
    }
}
