//! A warning for an objective call that runs on with no time limit.
//!
//! A cheap in-process objective is a plain function call, with no per-call timeout: a thread
//! per call would cost more than the objective. If one hangs, the run would wait in silence.
//! One watchdog thread, started at the first watched call, looks at the calls in flight
//! every second and says, once for each objective whose call runs past [`SLOW_CALL_AFTER`], which it is
//! and how to give it a limit. Watching a call costs two uncontended lock operations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an unlimited call runs before the warning.
pub const SLOW_CALL_AFTER: Duration = Duration::from_secs(60);

/// What is told of a slow call: the objective's description and how long it has run.
type Report = dyn Fn(&str, Duration) + Send + Sync;

struct InFlight {
    what: Arc<str>,
    started: Instant,
    warned: bool,
}

/// Calls in flight and the watcher that reports those past `after`.
pub struct Watchdog {
    after: Duration,
    poll: Duration,
    calls: Mutex<HashMap<u64, InFlight>>,
    next_id: AtomicU64,
    report: Box<Report>,
}

/// Removes its call from the watchdog when the call returns.
pub struct Watched<'a> {
    watchdog: &'a Watchdog,
    id: u64,
}

impl Watchdog {
    /// A watchdog whose thread runs for the life of the process (`&'static` is what the
    /// thread holds). `report` is told of each call past `after`, checked every `poll`.
    pub fn start(after: Duration, poll: Duration, report: Box<Report>) -> &'static Watchdog {
        let watchdog: &'static Watchdog = Box::leak(Box::new(Watchdog {
            after,
            poll,
            calls: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            report,
        }));
        // No thread, no warning: the calls themselves still run.
        let _ = std::thread::Builder::new()
            .name("slow-call-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(watchdog.poll);
                watchdog.check(Instant::now());
            });
        watchdog
    }

    /// The process's watchdog, warning through tracing.
    pub fn global() -> &'static Watchdog {
        static GLOBAL: OnceLock<&'static Watchdog> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            Watchdog::start(
                SLOW_CALL_AFTER,
                Duration::from_secs(1),
                // Once per objective: one that is slow rather than stuck would say it every group.
                Box::new(|what, running| {
                    crate::warn_once::warn_once(&format!("slow call {what}"), || format!(
                        "{what} has been scoring one group for {} s and has no time limit (a cheap in-process plugin runs without one); if it is stuck, stop crpo and give it a limit: `timeout_s` or `isolation = \"process\"` in its [[reward.objectives]] entry (score: --timeout-s, --isolation process)",
                        running.as_secs()
                    ))
                }),
            )
        })
    }

    /// Watches a call until the returned guard is dropped.
    pub fn watch(&self, what: &Arc<str>) -> Watched<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let call = InFlight {
            what: Arc::clone(what),
            started: Instant::now(),
            warned: false,
        };
        self.lock().insert(id, call);
        Watched { watchdog: self, id }
    }

    fn check(&self, now: Instant) {
        let mut due = Vec::new();
        for call in self.lock().values_mut() {
            let running = now.saturating_duration_since(call.started);
            if !call.warned && running >= self.after {
                call.warned = true;
                due.push((Arc::clone(&call.what), running));
            }
        }
        // Reported outside the lock: a slow sink must not hold up the calls.
        for (what, running) in due {
            (self.report)(&what, running);
        }
    }

    /// The map stays usable after a panic elsewhere: entries are plain data.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, InFlight>> {
        self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        self.watchdog.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(after: Duration) -> (&'static Watchdog, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let watchdog = Watchdog::start(
            after,
            Duration::from_millis(5),
            Box::new(move |what, _| sink.lock().unwrap().push(what.to_string())),
        );
        (watchdog, seen)
    }

    #[test]
    fn a_call_past_the_limit_is_reported_once_by_name() {
        let (watchdog, seen) = recording(Duration::from_millis(30));
        let what: Arc<str> = Arc::from("objective `stuck`");
        {
            let _call = watchdog.watch(&what);
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(*seen.lock().unwrap(), vec!["objective `stuck`".to_string()]);
        assert!(watchdog.lock().is_empty(), "a returned call is no longer watched");
    }

    #[test]
    fn calls_that_return_in_time_are_not_reported() {
        let (watchdog, seen) = recording(Duration::from_millis(300));
        let what: Arc<str> = Arc::from("objective `quick`");
        for _ in 0..1000 {
            let _call = watchdog.watch(&what);
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(seen.lock().unwrap().is_empty());
        assert!(watchdog.lock().is_empty());
    }
}
