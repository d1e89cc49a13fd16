//! PostgreSQL writes of the hot path folded into one statement each: a
//! worker's claim, and an attempt's result with its transition. Every
//! separate statement of a transaction is a round trip (and `BEGIN` and
//! `COMMIT` two more), so the seven of a transition cost more than the
//! commit itself; as data-modifying CTEs of one autocommit statement they
//! are one round trip and one commit, and the run's row gets one new
//! version instead of two (fencing and the run's move are one `UPDATE`).
//!
//! The invariants are those of [`Store::fenced`]: the fencing `UPDATE` is
//! the first thing every other part depends on (no fence row, nothing is
//! written), it takes the run's row lock, and it hands out the event and
//! step numbers. A step that is not in the expected state aborts the whole
//! statement through `wf_abort` (schema version 4), so nothing commits.
//! SQLite keeps the statement-by-statement transaction: it has no round
//! trips to save.

use attnflow_store::Value;

use super::{
    run_from_row, step_with_attempt_events, terminal_status, AttemptDecision, EventKind, Lease,
    NewEvent, RunRecord, StepRecord, Store, StoreError, RUN_COLUMNS,
};
use crate::spec::Outcome;

/// SQL text with its parameters numbered as they are added.
struct Statement<'a> {
    sql: String,
    values: Vec<Value<'a>>,
}

impl<'a> Statement<'a> {
    fn new() -> Self {
        Statement {
            sql: String::new(),
            values: Vec::new(),
        }
    }

    /// Adds a parameter; returns its placeholder.
    fn param(&mut self, value: impl Into<Value<'a>>) -> String {
        self.values.push(value.into());
        format!("?{}", self.values.len())
    }

    /// `INSERT INTO wf_events ... SELECT` of `events`, numbered from the
    /// fence's first reserved event, written only when the fence matched.
    fn insert_events(&mut self, run: &str, now: &str, events: &[NewEvent<'a>]) {
        let mut rows = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let kind = self.param(event.kind.map_or("", EventKind::as_str));
            let step = self.param(event.step);
            let state = self.param(event.state);
            let attempt = self.param(event.attempt);
            let outcome = self.param(event.outcome);
            let to_state = self.param(event.to_state);
            let key = self.param(event.idempotency_key);
            let token = self.param(event.lease_token);
            let detail = self.param(event.detail);
            rows.push(format!(
                "({index}, {kind}::text, {step}::bigint, {state}::text, {attempt}::bigint, \
                 {outcome}::text, {to_state}::text, {key}::text, {token}::bigint, {detail}::text)"
            ));
        }
        self.sql.push_str(&format!(
            "logged AS (INSERT INTO wf_events (run_id, seq, at_ms, kind, step, state, attempt, \
             outcome, to_state, idempotency_key, lease_token, detail) \
             SELECT {run}, fence.first_event + e.n, {now}, e.kind, e.step, e.state, e.attempt, \
             e.outcome, e.to_state, e.idempotency_key, e.lease_token, e.detail \
             FROM fence, guard, (VALUES {}) AS e(n, kind, step, state, attempt, outcome, to_state, \
             idempotency_key, lease_token, detail)) ",
            rows.join(", ")
        ));
    }
}

impl Store {
    /// [`Store::finish_attempt`] on PostgreSQL, in one statement.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_attempt_folded(
        &mut self,
        lease: &Lease,
        step: &StepRecord,
        attempt: i64,
        outcome: Outcome,
        detail: &str,
        decision: &AttemptDecision,
        reserved: (i64, i64),
    ) -> Result<Option<StepRecord>, StoreError> {
        let now_ms = self.now_ms();
        let abort_message = format!(
            "step {} of run {} is not in the expected state; a completed step never runs again",
            step.seq, step.run_id
        );
        let (retry_note, key);
        let mut statement = Statement::new();
        let run = statement.param(lease.run_id);
        let token = statement.param(lease.token);
        let owner = statement.param(&lease.owner);
        let now = statement.param(now_ms);
        // A run that ends gives its lease up in the same write.
        let lease_expiry = match decision {
            AttemptDecision::Complete {
                terminal: Some(_), ..
            } => "NULL".to_string(),
            _ => statement.param(now_ms + lease.duration.as_millis() as i64),
        };
        let events = statement.param(reserved.0);
        let steps = statement.param(reserved.1);
        let seq = statement.param(step.seq);
        let attempt_param = statement.param(attempt);
        let attempt_outcome = statement.param(outcome.as_str());
        let mut list = vec![NewEvent::attempt_finished(
            step,
            attempt,
            outcome.as_str(),
            lease,
            detail,
        )];
        // What the fencing UPDATE also changes on the run's row, and what
        // the step's UPDATE sets.
        let (run_sets, step_sets) = match decision {
            AttemptDecision::Retry { at_ms } => {
                let retry_at = statement.param(*at_ms);
                (
                    String::new(),
                    format!("attempt_open = 0, last_outcome = {attempt_outcome}, retry_at_ms = {retry_at}"),
                )
            }
            AttemptDecision::Complete {
                outcome: step_outcome,
                next_state,
                next_queue,
                terminal,
                ..
            } => {
                let step_outcome = statement.param(step_outcome.as_str());
                let next = statement.param(next_state.as_str());
                let step_sets = format!(
                    "attempt_open = 0, last_outcome = {attempt_outcome}, status = 'completed', \
                     outcome = {step_outcome}, next_state = {next}, finished_ms = {now}"
                );
                let run_sets = match terminal {
                    None => {
                        let queue = statement.param(next_queue.as_str());
                        format!(", current_state = {next}, queue = {queue}, ready_ms = {now}")
                    }
                    Some(kind) => {
                        let status = statement.param(terminal_status(*kind).as_str());
                        format!(
                            ", current_state = {next}, status = {status}, finished_ms = {now}, \
                             lease_owner = NULL"
                        )
                    }
                };
                (run_sets, step_sets)
            }
        };
        let mut begun = None;
        match decision {
            AttemptDecision::Retry { at_ms } => {
                retry_note = format!("next attempt in {} ms", (at_ms - now_ms).max(0));
                list.push(NewEvent::retry_scheduled(step, attempt, lease, &retry_note));
            }
            AttemptDecision::Complete {
                outcome: step_outcome,
                next_state,
                terminal,
                ..
            } => {
                super::completion_events(
                    lease,
                    step,
                    *step_outcome,
                    next_state,
                    *terminal,
                    &mut list,
                );
                if reserved.1 == 1 {
                    // Steps are numbered by the run's counter and begun one
                    // at a time, so the next is this one's successor; the
                    // guard below checks it against the counter.
                    let next_seq = step.seq + 1;
                    key = crate::action::TaskContext::idempotency_key_for(step.run_id, next_seq, 1);
                    list.extend(step_with_attempt_events(lease, next_state, next_seq, &key));
                    // Its epoch is the fence's, filled in below.
                    begun = Some(StepRecord::begun(
                        step.run_id,
                        next_seq,
                        next_state,
                        0,
                        now_ms,
                    ));
                }
            }
        }
        let abort = statement.param(&abort_message);
        let expected_step = begun.as_ref().map(|begun| begun.seq);
        let step_check = match expected_step {
            Some(next_seq) => {
                let next_seq = statement.param(next_seq);
                format!(" AND (SELECT first_step FROM fence) = {next_seq}")
            }
            None => String::new(),
        };
        statement.sql = format!(
            "WITH fence AS (UPDATE wf_runs SET lease_expires_ms = {lease_expiry}, updated_ms = {now}, \
             event_count = event_count + {events}, step_count = step_count + {steps}{run_sets} \
             WHERE id = {run} AND lease_token = {token} AND lease_owner = {owner} \
             AND lease_expires_ms > {now} \
             RETURNING event_count - {events} + 1 AS first_event, \
             step_count - {steps} + 1 AS first_step, epoch), \
             closed AS (UPDATE wf_steps SET {step_sets} WHERE run_id = {run} AND seq = {seq} \
             AND attempt = {attempt_param} AND status = 'running' \
             AND EXISTS (SELECT 1 FROM fence) RETURNING seq), \
             guard AS (SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM fence) \
             OR ((SELECT COUNT(*) FROM closed) = 1{step_check}) THEN 1 \
             ELSE wf_abort({abort}) END AS ok), "
        );
        if let (Some(begun), AttemptDecision::Complete { .. }) = (&begun, decision) {
            let state = statement.param(begun.state.as_str());
            statement.sql.push_str(&format!(
                "opened AS (INSERT INTO wf_steps (run_id, seq, state, epoch, status, attempt, \
                 attempt_open, started_ms) SELECT {run}, fence.first_step, {state}, fence.epoch, \
                 'running', 1, 1, {now} FROM fence, guard), "
            ));
        }
        statement.insert_events(&run, &now, &list);
        statement
            .sql
            .push_str("SELECT fence.first_event, fence.epoch FROM fence, guard");
        let row = self
            .connection
            .query_opt("finish attempt", &statement.sql, &statement.values)?;
        let Some(row) = row else {
            return Err(self.lease_lost(lease, now_ms));
        };
        let epoch = row.i64(1)?;
        Ok(begun.map(|begun| StepRecord { epoch, ..begun }))
    }

    /// The common claim on PostgreSQL in one statement: the oldest runnable
    /// run on `queues` whose lease is free (released, never taken), with
    /// its lease taken and `lease_acquired` logged. Runs whose lease
    /// expired (a crash to count) are left to the full claim.
    pub(super) fn claim_free_folded(
        &mut self,
        owner: &str,
        queues: &[String],
    ) -> Result<Option<(Lease, RunRecord)>, StoreError> {
        let now_ms = self.now_ms();
        let mut statement = Statement::new();
        let now = statement.param(now_ms);
        let owner_param = statement.param(owner);
        let queue_list = queues
            .iter()
            .map(|queue| statement.param(queue.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let kind = statement.param(EventKind::LeaseAcquired.as_str());
        let returned = RUN_COLUMNS
            .split(',')
            .map(|column| format!("r.{}", column.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        statement.sql = format!(
            "WITH candidate AS (SELECT id FROM wf_runs WHERE status = 'running' \
             AND queue IN ({queue_list}) AND ready_ms <= {now} AND lease_owner IS NULL \
             ORDER BY ready_ms, id LIMIT 1 FOR UPDATE SKIP LOCKED), \
             taken AS (UPDATE wf_runs r SET lease_owner = {owner_param}, \
             lease_token = r.lease_token + 1, lease_expires_ms = {now} + r.lease_ms, \
             updated_ms = {now}, event_count = r.event_count + 1 \
             FROM candidate WHERE r.id = candidate.id AND r.lease_owner IS NULL \
             RETURNING {returned}, r.lease_ms, r.event_count), \
             logged AS (INSERT INTO wf_events (run_id, seq, at_ms, kind, state, lease_token, detail) \
             SELECT id, event_count, {now}, {kind}, current_state, lease_token, {owner_param} \
             FROM taken) \
             SELECT * FROM taken"
        );
        let row = self
            .connection
            .query_opt("claim a run", &statement.sql, &statement.values)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let run = run_from_row(&row)?;
        let duration = std::time::Duration::from_millis(row.i64(16)?.max(1) as u64);
        let lease = Lease {
            run_id: run.id,
            owner: owner.to_string(),
            token: run.lease_token,
            duration,
        };
        Ok(Some((lease, run)))
    }
}
