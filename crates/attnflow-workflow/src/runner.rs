//! The executor: drives one run through its states, durably.
//!
//! Recovery follows from the store's records alone:
//! * a step marked completed is never run again (its transition was
//!   committed with it);
//! * an attempt recorded as started but without a result is re-executed
//!   with the same idempotency key (at-least-once);
//! * a retry waiting on its backoff waits only for what is left of it.
//!
//! External commands are tied to the executor's thread with
//! `PR_SET_PDEATHSIG` on Linux, so drive runs from a thread that lives as
//! long as the run (the CLI uses its main thread).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::action::{Poll, RunningAction, TaskContext, TaskOutput, TaskRegistry};
use crate::spec::{Action, ActiveState, Outcome, Spec, SpecError};
use crate::store::{
    new_owner_id, AttemptDecision, Lease, RunRecord, RunStatus, StepRecord, Store, StoreError,
};

/// Why a run could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spec (given, or stored with the run) is invalid.
    #[error(transparent)]
    Spec(#[from] Box<SpecError>),
    /// The store refused, or this executor lost its lease.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store holds a state the run's spec does not declare.
    #[error("run {run} is in state `{state}`, which its spec does not declare")]
    UnknownState {
        /// The run.
        run: i64,
        /// The stored state.
        state: String,
    },
}

impl From<SpecError> for RunError {
    fn from(error: SpecError) -> Self {
        RunError::Spec(Box::new(error))
    }
}

/// What the runner reports while it works (for progress displays).
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A step began.
    StepStarted {
        /// Step number.
        step: i64,
        /// The state.
        state: String,
    },
    /// An attempt is about to run.
    AttemptStarted {
        /// The state.
        state: String,
        /// Attempt number.
        attempt: i64,
        /// Its idempotency key.
        key: String,
        /// Whether it is a re-execution after a crash.
        rerun: bool,
    },
    /// An attempt returned.
    AttemptFinished {
        /// The state.
        state: String,
        /// Attempt number.
        attempt: i64,
        /// Its output.
        output: TaskOutput,
    },
    /// Waiting before the next attempt.
    Backoff {
        /// The state.
        state: String,
        /// How long.
        delay: Duration,
    },
    /// The run moved on.
    Transition {
        /// From.
        from: String,
        /// To.
        to: String,
        /// Why.
        outcome: Outcome,
    },
}

/// Drives runs of workflows using one store and one task registry.
pub struct Runner<'a> {
    store: &'a mut Store,
    registry: &'a TaskRegistry,
    owner: String,
    observer: Box<dyn FnMut(&Progress) + 'a>,
    /// The store's canonical path, given to commands so that orphans of a
    /// dead executor can be found.
    database: Option<String>,
    /// A worker serves only these queues; a run whose state is on another
    /// is handed back. `None`: every state (the `workflow run` executor).
    queues: Option<Vec<String>>,
    /// Set when a worker drains: finish the attempt, hand the run back.
    stop: Option<&'a AtomicBool>,
    /// How long to keep reconnecting to a server that went away.
    reconnect_budget: Duration,
}

/// Backoffs longer than this are waited out by handing the run back (a
/// worker), not by holding its lease.
const HAND_BACK_BACKOFF: Duration = Duration::from_millis(500);

impl<'a> Runner<'a> {
    /// A runner with a fresh executor identity.
    pub fn new(store: &'a mut Store, registry: &'a TaskRegistry) -> Self {
        let database = match store.location() {
            // The URL without its password: it only has to tell stores apart.
            Some(location @ attnflow_store::Location::Postgres(_)) => Some(location.to_string()),
            Some(location) => Some(location.argument()),
            None => std::fs::canonicalize(store.path())
                .ok()
                .map(|path| path.display().to_string()),
        };
        Runner {
            store,
            registry,
            owner: new_owner_id(),
            observer: Box::new(|_| {}),
            database,
            queues: None,
            stop: None,
            reconnect_budget: attnflow_store::reconnect_budget(),
        }
    }

    /// Makes this runner a worker's slot: it runs only states on `queues`
    /// and hands a run back when its next state is elsewhere, when a long
    /// backoff starts, or once `stop` is set.
    pub fn serving(mut self, queues: Vec<String>, stop: &'a AtomicBool) -> Self {
        self.queues = Some(queues);
        self.stop = Some(stop);
        self
    }

    /// How long to keep reconnecting after the server went away (default
    /// [`attnflow_store::reconnect_budget`]: 30 s unless
    /// `ATTNFLOW_DB_RETRY_SECONDS` says otherwise).
    pub fn with_reconnect_budget(mut self, budget: Duration) -> Self {
        self.reconnect_budget = budget;
        self
    }

    /// Drives a run this worker claimed ([`Store::claim`]) until it ends or
    /// is handed back; returns the run as left.
    pub fn drive_claimed(&mut self, lease: &Lease, run: &RunRecord) -> Result<RunRecord, RunError> {
        let spec = Spec::parse(&run.spec_origin, &run.spec_source)
            .map_err(RunError::from)
            .and_then(|spec| {
                spec.check_tasks(self.registry)
                    .map(|()| spec)
                    .map_err(RunError::from)
            });
        let spec = match spec {
            Ok(spec) => spec,
            Err(error) => {
                let _ = self
                    .store
                    .release_lease(lease, &format!("this worker cannot run it: {error}"));
                return Err(error);
            }
        };
        self.with_lease(lease, &spec, Some(run.clone()))
    }

    fn serves(&self, queue: &str) -> bool {
        self.queues
            .as_ref()
            .is_none_or(|queues| queues.iter().any(|served| served == queue))
    }

    fn stopping(&self) -> bool {
        self.stop.is_some_and(|stop| stop.load(Ordering::Relaxed))
    }

    /// Calls `observer` with every step, attempt and transition.
    pub fn with_observer(mut self, observer: impl FnMut(&Progress) + 'a) -> Self {
        self.observer = Box::new(observer);
        self
    }

    /// Uses `owner` as the executor identity (tests use it to tell
    /// executors apart).
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Creates a run of `spec` and drives it to a terminal state.
    pub fn start(&mut self, spec: &Spec) -> Result<RunRecord, RunError> {
        spec.check_tasks(self.registry)?;
        let run_id = self.store.create_run(spec)?;
        self.drive(run_id, spec)
    }

    /// Creates a run of `spec` without driving it; returns its id.
    pub fn create(&mut self, spec: &Spec) -> Result<i64, RunError> {
        spec.check_tasks(self.registry)?;
        Ok(self.store.create_run(spec)?)
    }

    /// Continues run `run_id` from its last recorded state, following the
    /// spec stored with it.
    pub fn resume(&mut self, run_id: i64) -> Result<RunRecord, RunError> {
        let run = self.store.run(run_id)?;
        let spec = Spec::parse(&run.spec_origin, &run.spec_source)?;
        spec.check_tasks(self.registry)?;
        self.drive(run_id, &spec)
    }

    /// Restarts a failed or crashed run (see [`Store::restart`]) and drives
    /// it again.
    pub fn restart(&mut self, run_id: i64) -> Result<RunRecord, RunError> {
        let run = self.store.run(run_id)?;
        let spec = Spec::parse(&run.spec_origin, &run.spec_source)?;
        spec.check_tasks(self.registry)?;
        self.store.restart(run_id)?;
        self.drive(run_id, &spec)
    }

    fn drive(&mut self, run_id: i64, spec: &Spec) -> Result<RunRecord, RunError> {
        let lease = self
            .store
            .acquire_lease(run_id, &self.owner, spec.lease, spec.max_crashes)?;
        self.with_lease(&lease, spec, None)
    }

    /// Drives the run under `lease`; `claimed` is the run as the claim
    /// left it, when the caller has it (not read again).
    fn with_lease(
        &mut self,
        lease: &Lease,
        spec: &Spec,
        claimed: Option<RunRecord>,
    ) -> Result<RunRecord, RunError> {
        let run_id = lease.run_id;
        let runs_commands = spec.states.iter().any(|state| {
            matches!(
                state.active().map(|active| &active.action),
                Some(Action::Command { .. })
            )
        });
        if let (true, Some(database)) = (runs_commands, &self.database) {
            // Holding the lease, every process of this run is an orphan.
            crate::action::kill_orphans(database, run_id);
        }
        let result = self.drive_with_lease(lease, spec, claimed);
        if let Err(error) = &result {
            // Hand the lease back on an orderly failure so the next executor
            // does not count a crash; a lost lease or a lost server has
            // nothing to hand back (the lease expires).
            let lost = matches!(error, RunError::Store(StoreError::LeaseLost { .. }))
                || matches!(error, RunError::Store(store) if store.is_lost());
            if !lost {
                let _ = self
                    .store
                    .release_lease(lease, &format!("executor stopped: {error}"));
            }
        }
        result
    }

    fn drive_with_lease(
        &mut self,
        lease: &Lease,
        spec: &Spec,
        claimed: Option<RunRecord>,
    ) -> Result<RunRecord, RunError> {
        // The step this executor began together with the previous step's
        // completion (its first attempt is recorded as started but has not
        // run, so it is not a re-execution), with the run as that commit
        // left it: under the lease nobody else writes either, so the next
        // round reads neither back (two round trips less per transition).
        // A claimed run comes without its step: that one is read.
        let mut prepared: Option<(RunRecord, Option<StepRecord>)> = claimed.map(|run| (run, None));
        loop {
            match self.advance(lease, spec, &mut prepared) {
                Ok(Some(run)) => return Ok(run),
                Ok(None) => {}
                Err(RunError::Store(error)) if error.is_lost() => {
                    // The server went away. Whatever it had not committed
                    // is gone; reconnect and carry on from the records (an
                    // attempt whose result was lost re-runs with its key).
                    self.store.reconnect(self.reconnect_budget)?;
                    prepared = None;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One step of the loop: returns the run when it ended or was handed
    /// back, `None` to go on.
    fn advance(
        &mut self,
        lease: &Lease,
        spec: &Spec,
        prepared: &mut Option<(RunRecord, Option<StepRecord>)>,
    ) -> Result<Option<RunRecord>, RunError> {
        let run_id = lease.run_id;
        {
            let (run, prepared_step) = match prepared.take() {
                Some((run, step)) => (run, step),
                None => (self.store.run(run_id)?, None),
            };
            if run.status != RunStatus::Running {
                return Ok(Some(run));
            }
            if !self.serves(&run.queue) || self.stopping() {
                let reason = if self.stopping() {
                    "worker draining: handed back".to_string()
                } else {
                    format!(
                        "state `{}` runs on queue `{}`: handed over",
                        run.current_state, run.queue
                    )
                };
                self.store.release_lease(lease, &reason)?;
                return Ok(Some(self.store.run(run_id)?));
            }
            let unknown = || RunError::UnknownState {
                run: run_id,
                state: run.current_state.clone(),
            };
            let state = spec.state(&run.current_state).ok_or_else(unknown)?;
            let Some(active) = state.active() else {
                // Reaching a terminal state finishes the run in the same
                // transaction, so a running run in one is corrupt.
                return Err(StoreError::Corrupt {
                    path: self.store.path().to_string(),
                    detail: format!("run {run_id} is running in terminal state `{}`", state.name),
                }
                .into());
            };

            let was_prepared = prepared_step.is_some();
            let open_step = match prepared_step {
                Some(step) => Some(step),
                None => self.store.open_step(run_id)?,
            };
            let (step, fresh) = match open_step {
                Some(step) if step.state == state.name => {
                    let fresh = was_prepared;
                    if fresh {
                        (self.observer)(&Progress::StepStarted {
                            step: step.seq,
                            state: state.name.clone(),
                        });
                    }
                    (step, fresh)
                }
                Some(step) => {
                    return Err(StoreError::Corrupt {
                        path: self.store.path().to_string(),
                        detail: format!(
                            "run {run_id} is in state `{}` but its open step {} is in `{}`",
                            state.name, step.seq, step.state
                        ),
                    }
                    .into())
                }
                None => {
                    // Visits are counted only for a state with a cap.
                    let exhausted = match active.max_visits {
                        Some(maximum) => {
                            self.store.visits(run_id, &state.name, run.epoch)? >= i64::from(maximum)
                        }
                        None => false,
                    };
                    // The common path records the step and its first attempt
                    // together; an exhausted step runs no attempt.
                    let step = if exhausted {
                        self.store.begin_step(lease, &state.name, run.epoch)?
                    } else {
                        self.store
                            .begin_step_with_attempt(lease, &state.name, run.epoch)?
                    };
                    (self.observer)(&Progress::StepStarted {
                        step: step.seq,
                        state: state.name.clone(),
                    });
                    (step, !exhausted)
                }
            };

            // Decided from the records (visits include this step), so a
            // crash between beginning the step and completing it as
            // exhausted decides the same way on resume.
            if let (Some(maximum), 0) = (active.max_visits, step.attempt) {
                let visits = self.store.visits(run_id, &state.name, step.epoch)?;
                if visits > i64::from(maximum) {
                    let next = active
                        .next_state(Outcome::Exhausted)
                        .ok_or_else(unknown)?
                        .to_string();
                    let terminal = spec.state(&next).and_then(|target| target.terminal());
                    self.store.complete_exhausted(
                        lease,
                        &step,
                        &next,
                        spec.queue_of(&next),
                        terminal,
                    )?;
                    (self.observer)(&Progress::Transition {
                        from: state.name.clone(),
                        to: next,
                        outcome: Outcome::Exhausted,
                    });
                    return Ok(None);
                }
            }

            let (attempt, rerun) = if fresh || step.attempt == 0 {
                (1, false)
            } else if step.attempt_open {
                (step.attempt, true)
            } else {
                if let Some(retry_at) = step.retry_at_ms {
                    let delay =
                        Duration::from_millis((retry_at - self.store.now_ms()).max(0) as u64);
                    if self.queues.is_some() && delay > HAND_BACK_BACKOFF {
                        // A worker does not sit on a run: it hands it back,
                        // claimable when the backoff ends.
                        self.store.release_lease_until(
                            lease,
                            &format!("backoff of {} ms: handed back", delay.as_millis()),
                            Some(retry_at),
                        )?;
                        return Ok(Some(self.store.run(run_id)?));
                    }
                    if !delay.is_zero() {
                        (self.observer)(&Progress::Backoff {
                            state: state.name.clone(),
                            delay,
                        });
                        self.wait(lease, delay)?;
                    }
                }
                (step.attempt + 1, false)
            };
            let key = TaskContext::idempotency_key_for(run_id, step.seq, attempt as u32);
            if !fresh {
                self.store
                    .start_attempt(lease, &step, attempt, &key, rerun)?;
            }
            (self.observer)(&Progress::AttemptStarted {
                state: state.name.clone(),
                attempt,
                key: key.clone(),
                rerun,
            });
            let context = TaskContext {
                run_id,
                step: step.seq,
                attempt: attempt as u32,
                state: state.name.clone(),
                idempotency_key: key.clone(),
                args: serde_json::Value::Null,
                cancelled: Default::default(),
            };
            let output = match self.execute(lease, active, context) {
                Err(RunError::Store(StoreError::LeaseLost { reason, .. })) => {
                    return Err(self.superseded(lease, &step, attempt, &key, reason))
                }
                other => other?,
            };
            (self.observer)(&Progress::AttemptFinished {
                state: state.name.clone(),
                attempt,
                output: output.clone(),
            });

            let decision = if output.outcome.is_retryable()
                && attempt < i64::from(active.retry.attempts)
            {
                let unit = crate::action::unit_from_text(&key, 0x6a69_7474_6572);
                let delay = active.retry.delay_before(attempt as u32 + 1, unit);
                AttemptDecision::Retry {
                    at_ms: self.store.now_ms() + delay.as_millis() as i64,
                }
            } else {
                let next = active
                    .next_state(output.outcome)
                    .ok_or_else(unknown)?
                    .to_string();
                let target = spec.state(&next).ok_or_else(unknown)?;
                let terminal = target.terminal();
                // Begin the next step in the same commit unless it is
                // terminal, its visit cap is reached, or another
                // worker's queue (or nobody, when draining) takes it.
                let begin_next = match target.active() {
                    None => false,
                    Some(next_active) if !self.serves(&next_active.queue) || self.stopping() => {
                        false
                    }
                    Some(next_active) => match next_active.max_visits {
                        None => true,
                        Some(maximum) => {
                            self.store.visits(run_id, &next, run.epoch)? < i64::from(maximum)
                        }
                    },
                };
                AttemptDecision::Complete {
                    outcome: output.outcome,
                    next_queue: spec.queue_of(&next).to_string(),
                    next_state: next,
                    terminal,
                    begin_next,
                }
            };
            let begun = match self.store.finish_attempt(
                lease,
                &step,
                attempt,
                output.outcome,
                &output.detail,
                &decision,
            ) {
                Err(StoreError::LeaseLost { reason, .. }) => {
                    return Err(self.superseded(lease, &step, attempt, &key, reason))
                }
                other => other?,
            };
            if let (
                Some(begun),
                AttemptDecision::Complete {
                    next_state,
                    next_queue,
                    ..
                },
            ) = (begun, &decision)
            {
                let moved = RunRecord {
                    current_state: next_state.clone(),
                    queue: next_queue.clone(),
                    epoch: begun.epoch,
                    ..run.clone()
                };
                *prepared = Some((moved, Some(begun)));
            }
            if let AttemptDecision::Complete {
                outcome,
                next_state,
                ..
            } = decision
            {
                (self.observer)(&Progress::Transition {
                    from: state.name.clone(),
                    to: next_state,
                    outcome,
                });
            }
            Ok(None)
        }
    }

    /// The action ran, but its result came after this executor lost the
    /// lease: fencing refused it. The side effect happened all the same,
    /// so it is noted (outside the run's log) as superseded.
    fn superseded(
        &mut self,
        lease: &Lease,
        step: &crate::store::StepRecord,
        attempt: i64,
        key: &str,
        reason: String,
    ) -> RunError {
        let detail = format!("result refused by fencing: {reason}");
        let _ = self
            .store
            .record_superseded(lease, step.seq, attempt, key, &detail);
        RunError::Store(StoreError::LeaseLost {
            run: lease.run_id,
            token: lease.token,
            reason: format!("{reason}; attempt {key} is reported as superseded"),
        })
    }

    /// Sleeps `delay` while keeping the lease alive.
    fn wait(&mut self, lease: &Lease, delay: Duration) -> Result<(), RunError> {
        let until = Instant::now() + delay;
        let beat = heartbeat_interval(lease);
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep(beat.min(until - now));
            self.keep_lease(lease)?;
        }
    }

    /// Runs one attempt, renewing the lease while it runs and enforcing the
    /// state's timeout. Losing the lease stops the action and the executor.
    fn execute(
        &mut self,
        lease: &Lease,
        active: &ActiveState,
        mut context: TaskContext,
    ) -> Result<TaskOutput, RunError> {
        let started = match &active.action {
            Action::Task { name, args } => {
                let task = self
                    .registry
                    .get(name)
                    .ok_or_else(|| RunError::UnknownState {
                        run: context.run_id,
                        state: format!("{} (task `{name}` is not registered)", context.state),
                    })?;
                context.args = args.clone();
                Ok(RunningAction::start_task(task, context))
            }
            Action::Command { argv, env } => {
                RunningAction::start_command(argv, env, &context, self.database.as_deref())
            }
        };
        let mut running = match started {
            Ok(running) => running,
            Err(output) => return Ok(output),
        };
        let deadline = active.timeout.map(|timeout| Instant::now() + timeout);
        let beat = heartbeat_interval(lease);
        loop {
            let wait = match deadline {
                Some(deadline) => beat.min(deadline.saturating_duration_since(Instant::now())),
                None => beat,
            };
            if let Poll::Done(output) = running.poll(wait) {
                return Ok(output);
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                running.cancel();
                let limit = active.timeout.unwrap_or_default();
                return Ok(TaskOutput::with(
                    Outcome::Timeout,
                    format!(
                        "stopped after the state's timeout of {} ms",
                        limit.as_millis()
                    ),
                ));
            }
            if let Err(error) = self.keep_lease(lease) {
                running.cancel();
                return Err(error);
            }
        }
    }
}

impl Runner<'_> {
    /// Renews the lease; a server that went away is waited for (the action
    /// keeps running meanwhile) for up to the reconnect budget.
    fn keep_lease(&mut self, lease: &Lease) -> Result<(), RunError> {
        match self.store.heartbeat(lease) {
            Err(error) if error.is_lost() => {
                self.store.reconnect(self.reconnect_budget)?;
                Ok(self.store.heartbeat(lease)?)
            }
            other => Ok(other?),
        }
    }
}

fn heartbeat_interval(lease: &Lease) -> Duration {
    (lease.duration / 3).max(Duration::from_millis(10))
}
