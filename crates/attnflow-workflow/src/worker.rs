//! `attnflow worker`: slots that claim runnable runs from their queues and
//! drive them, on any number of machines sharing one store.
//!
//! Each slot has its own connection. It claims a run (`FOR UPDATE SKIP
//! LOCKED` on PostgreSQL), drives it while its states stay on the worker's
//! queues, and hands it back otherwise. Idle slots sleep until a
//! notification (PostgreSQL `LISTEN`) or the poll interval wakes them. When
//! `stop` is set (SIGTERM), slots finish the attempt they are running, hand
//! their runs back and exit: a graceful drain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use attnflow_store::{Backend, Location};

use crate::action::TaskRegistry;
use crate::runner::{RunError, Runner};
use crate::store::{host_name, RunStatus, Store, StoreError, WAKE_CHANNEL};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Its name in `wf_workers` (default `host:pid`).
    pub name: Option<String>,
    /// The queues it serves (default: `default`).
    pub queues: Vec<String>,
    /// Runs driven at once.
    pub concurrency: usize,
    /// How often idle slots look for work without a notification.
    pub poll: Duration,
    /// Exit once every slot has found no work for this long (tests, bench).
    pub exit_when_idle: Option<Duration>,
    /// How long to keep reconnecting after the server went away.
    pub reconnect_budget: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            name: None,
            queues: vec![crate::spec::DEFAULT_QUEUE.to_string()],
            concurrency: 1,
            poll: Duration::from_secs(1),
            exit_when_idle: None,
            reconnect_budget: attnflow_store::reconnect_budget(),
        }
    }
}

/// What a worker reports as it works.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// The worker registered and its slots started.
    Started {
        /// Its name.
        name: String,
    },
    /// A slot claimed a run.
    Claimed {
        /// The slot's lease owner.
        owner: String,
        /// The run.
        run: i64,
        /// Its state.
        state: String,
        /// From when the run became runnable to the claim.
        latency: Duration,
    },
    /// A slot let go of a run: it ended, or was handed to another queue.
    Released {
        /// The slot's lease owner.
        owner: String,
        /// The run.
        run: i64,
        /// Its status now.
        status: RunStatus,
        /// Its state now.
        state: String,
    },
    /// A slot's result was refused by fencing: another executor has the run.
    Superseded {
        /// The run.
        run: i64,
        /// Why.
        reason: String,
    },
    /// A slot could not drive a run (the run is left for another try).
    Failed {
        /// The run.
        run: i64,
        /// Why.
        reason: String,
    },
    /// The server went away; the slot reconnected.
    Reconnected {
        /// The slot's lease owner.
        owner: String,
    },
    /// SIGTERM: finishing attempts and handing runs back.
    Draining,
}

/// A worker that ran and stopped.
#[derive(Debug, Clone, Default)]
pub struct WorkerSummary {
    /// Runs claimed.
    pub claims: u64,
    /// Claim latencies (runnable to claimed).
    pub latencies: Vec<Duration>,
}

/// Why a worker stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The store could not be opened or was lost for good.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A queue name is not usable.
    #[error("--queue `{0}`: a queue name is 1 to 64 letters, digits, `_`, `-` or `.`")]
    BadQueue(String),
}

impl WorkerError {
    /// Whether the fault is the user's input (exit 2).
    pub fn is_bad_input(&self) -> bool {
        match self {
            WorkerError::Store(error) => error.is_bad_input(),
            WorkerError::BadQueue(_) => true,
        }
    }
}

/// Idle slots wait here; a notification or a finished run wakes them.
#[derive(Default)]
struct Wake {
    generation: Mutex<u64>,
    signal: Condvar,
}

impl Wake {
    fn ring(&self) {
        if let Ok(mut generation) = self.generation.lock() {
            *generation += 1;
        }
        self.signal.notify_all();
    }

    fn generation(&self) -> u64 {
        self.generation.lock().map_or(0, |generation| *generation)
    }

    fn wait(&self, seen: u64, timeout: Duration) {
        if let Ok(generation) = self.generation.lock() {
            let _ = self
                .signal
                .wait_timeout_while(generation, timeout, |now| *now == seen);
        }
    }
}

/// Runs a worker on the store at `location` until `stop` is set (and its
/// slots have drained) or, with `exit_when_idle`, until there is no work.
pub fn run_worker(
    location: &Location,
    registry: &TaskRegistry,
    options: &WorkerOptions,
    stop: &AtomicBool,
    observer: &(dyn Fn(&WorkerEvent) + Sync),
) -> Result<WorkerSummary, WorkerError> {
    if let Some(bad) = options
        .queues
        .iter()
        .find(|queue| !crate::spec::is_queue_name(queue))
    {
        return Err(WorkerError::BadQueue(bad.clone()));
    }
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| format!("{}:{}", host_name(), std::process::id()));
    let prefix = format!("{}:{}:{name}#", host_name(), std::process::id());
    let mut store = Store::connect(location)?;
    let poll = match store.backend() {
        Backend::Postgres => options.poll,
        // No notifications: SQLite workers poll more often.
        Backend::Sqlite => options.poll.min(Duration::from_millis(50)),
    };
    store.register_worker(&name, &prefix, &options.queues, options.concurrency)?;
    observer(&WorkerEvent::Started { name: name.clone() });
    let wake = Arc::new(Wake::default());
    let idle_slots = std::sync::atomic::AtomicUsize::new(0);
    let finished = AtomicBool::new(false);
    let mut listener = store
        .connection()
        .listener(WAKE_CHANNEL)
        .map_err(StoreError::from)?;
    let summary = Mutex::new(WorkerSummary::default());
    let slots = options.concurrency.max(1);
    let result = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..slots)
            .map(|slot| {
                let owner = format!("{prefix}{slot}");
                let (wake, idle_slots, finished, summary) =
                    (&wake, &idle_slots, &finished, &summary);
                scope.spawn(move || {
                    run_slot(
                        location, registry, options, &owner, stop, poll, wake, idle_slots, slots,
                        finished, summary, observer,
                    )
                })
            })
            .collect();
        // This thread listens and heartbeats until the slots are done.
        let mut last_beat = Instant::now();
        let mut draining = false;
        while !handles.iter().all(|handle| handle.is_finished()) {
            if listener.wait(poll.min(Duration::from_millis(200))) {
                wake.ring();
            }
            if stop.load(Ordering::Relaxed) && !draining {
                draining = true;
                observer(&WorkerEvent::Draining);
                wake.ring();
                let _ = store.worker_heartbeat(&name, "draining");
            }
            if last_beat.elapsed() >= Duration::from_secs(1) {
                last_beat = Instant::now();
                let status = if draining { "draining" } else { "running" };
                if store.worker_heartbeat(&name, status).is_err() {
                    let _ = store.reconnect(Duration::from_millis(100));
                }
            }
        }
        let mut first_error = None;
        for handle in handles {
            if let Ok(Err(error)) = handle.join() {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    });
    let _ = store.worker_heartbeat(&name, "stopped");
    result?;
    Ok(summary.into_inner().unwrap_or_default())
}

#[allow(clippy::too_many_arguments)]
fn run_slot(
    location: &Location,
    registry: &TaskRegistry,
    options: &WorkerOptions,
    owner: &str,
    stop: &AtomicBool,
    poll: Duration,
    wake: &Wake,
    idle_slots: &std::sync::atomic::AtomicUsize,
    slots: usize,
    finished: &AtomicBool,
    summary: &Mutex<WorkerSummary>,
    observer: &(dyn Fn(&WorkerEvent) + Sync),
) -> Result<(), WorkerError> {
    let mut store = Store::connect_migrated(location)?;
    let mut idle_since: Option<Instant> = None;
    let mut counted_idle = false;
    loop {
        if stop.load(Ordering::Relaxed) || finished.load(Ordering::Relaxed) {
            return Ok(());
        }
        let seen = wake.generation();
        let claimed = match store.claim(owner, &options.queues) {
            Ok(claimed) => claimed,
            Err(error) if error.is_lost() => {
                store.reconnect(options.reconnect_budget)?;
                observer(&WorkerEvent::Reconnected {
                    owner: owner.to_string(),
                });
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        let Some((lease, run)) = claimed else {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if let Some(limit) = options.exit_when_idle {
                if !counted_idle && since.elapsed() >= limit {
                    counted_idle = true;
                    if idle_slots.fetch_add(1, Ordering::SeqCst) + 1 == slots {
                        finished.store(true, Ordering::SeqCst);
                        wake.ring();
                        return Ok(());
                    }
                }
            }
            wake.wait(seen, poll);
            continue;
        };
        if counted_idle {
            idle_slots.fetch_sub(1, Ordering::SeqCst);
            counted_idle = false;
        }
        idle_since = None;
        let latency = Duration::from_millis((store.now_ms() - run.ready_ms).max(0) as u64);
        if let Ok(mut summary) = summary.lock() {
            summary.claims += 1;
            summary.latencies.push(latency);
        }
        observer(&WorkerEvent::Claimed {
            owner: owner.to_string(),
            run: run.id,
            state: run.current_state.clone(),
            latency,
        });
        let result = Runner::new(&mut store, registry)
            .with_owner(owner)
            .with_reconnect_budget(options.reconnect_budget)
            .serving(options.queues.clone(), stop)
            .drive_claimed(&lease, &run);
        match result {
            Ok(left) => {
                // A run handed to another queue may be for a sibling slot;
                // a finished one is work for nobody, so idle slots sleep
                // on (waking them all per finished run is a herd of
                // claims that find nothing).
                if left.status == RunStatus::Running {
                    wake.ring();
                }
                observer(&WorkerEvent::Released {
                    owner: owner.to_string(),
                    run: left.id,
                    status: left.status,
                    state: left.current_state,
                })
            }
            Err(RunError::Store(StoreError::LeaseLost { reason, .. })) => {
                observer(&WorkerEvent::Superseded {
                    run: run.id,
                    reason,
                })
            }
            Err(RunError::Store(error)) if error.is_lost() => {
                // The runner already tried to reconnect for the whole budget.
                return Err(error.into());
            }
            Err(error) => observer(&WorkerEvent::Failed {
                run: run.id,
                reason: error.to_string(),
            }),
        }
    }
}
