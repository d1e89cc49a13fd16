//! What workers need from the store: claiming runnable runs, registering
//! themselves with a heartbeat, and noting attempts whose results came too
//! late (refused by fencing).

use std::time::Duration;

use attnflow_store::{args, Backend, Value};
use serde::Serialize;

use super::{run_from_row, Lease, RunRecord, Store, StoreError, RUN_COLUMNS};

/// One worker as registered in `wf_workers`, with the leases it holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRecord {
    /// Its name (`--name`, or `host:pid`).
    pub name: String,
    /// Lease owners of its slots start with this.
    pub owner_prefix: String,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// How many runs it drives at once.
    pub concurrency: i64,
    /// When it started (ms since the epoch).
    pub started_ms: i64,
    /// Its last heartbeat (ms since the epoch).
    pub heartbeat_ms: i64,
    /// When it stopped, if it did so in order.
    pub stopped_ms: Option<i64>,
    /// `running`, `draining` or `stopped`.
    pub status: String,
    /// The runs it holds leases on: `(run, state, lease token, expires)`.
    pub leases: Vec<(i64, String, i64, Option<i64>)>,
}

/// An attempt whose result arrived after its executor had lost the lease:
/// its side effect happened, but the run went on without it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SupersededRecord {
    /// The run.
    pub run_id: i64,
    /// The step.
    pub step: i64,
    /// The attempt.
    pub attempt: i64,
    /// The attempt's idempotency key.
    pub idempotency_key: String,
    /// The executor that ran it.
    pub owner: String,
    /// The lease token it held.
    pub lease_token: i64,
    /// When the refusal was noted (ms since the epoch).
    pub at_ms: i64,
    /// Why its write was refused.
    pub detail: String,
}

fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|index| format!("?{index}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Claims one runnable run on `queues` for `owner`: a running run whose
    /// lease is free (released, or expired: a crash, counted as such) and
    /// whose backoff is over, oldest first. PostgreSQL skips rows other
    /// workers are claiming (`FOR UPDATE SKIP LOCKED`), so workers never
    /// wait on each other. Returns the lease and the run as claimed.
    pub fn claim(
        &mut self,
        owner: &str,
        queues: &[String],
    ) -> Result<Option<(Lease, RunRecord)>, StoreError> {
        if self.backend() == Backend::Postgres {
            if let Some(claimed) = self.claim_free_folded(owner, queues)? {
                return Ok(Some(claimed));
            }
            // Only a run whose lease expired is left to claim: look before
            // opening a transaction (an idle worker polls this).
            let expired = self.connection.query_opt(
                "claim a run",
                &format!(
                    "SELECT id FROM wf_runs WHERE status = 'running' AND queue IN ({}) \
                     AND ready_ms <= ?1 AND lease_owner IS NOT NULL AND lease_expires_ms <= ?1 \
                     LIMIT 1",
                    placeholders(2, queues.len())
                ),
                &std::iter::once(Value::from(self.now_ms()))
                    .chain(queues.iter().map(Value::from))
                    .collect::<Vec<_>>(),
            )?;
            if expired.is_none() {
                return Ok(None);
            }
        }
        let now = self.now_ms();
        let lock = match self.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "SELECT {RUN_COLUMNS}, lease_ms, max_crashes FROM wf_runs \
             WHERE status = 'running' AND queue IN ({}) AND ready_ms <= ?1 \
             AND (lease_owner IS NULL OR lease_expires_ms <= ?1) \
             ORDER BY ready_ms, id LIMIT 1{lock}",
            placeholders(2, queues.len())
        );
        let mut values: Vec<Value<'_>> = vec![now.into()];
        values.extend(queues.iter().map(Value::from));
        self.connection.begin("claim a run")?;
        let result = (|| {
            let Some(row) = self.connection.query_opt("claim a run", &sql, &values)? else {
                return Ok(None);
            };
            let run = run_from_row(&row)?;
            let duration = Duration::from_millis(row.i64(16)?.max(1) as u64);
            let max_crashes = u32::try_from(row.i64(17)?).unwrap_or(u32::MAX);
            match self.take_lease(&run, owner, duration, max_crashes, now, false) {
                Ok(lease) => Ok(Some((lease, run))),
                // Recorded: the run is now marked crashed; claim another.
                Err(StoreError::CrashLoop { .. }) => Ok(None),
                Err(error) => Err(error),
            }
        })();
        let keep = result.is_ok();
        if keep {
            if let Err(error) = self.connection.commit("claim a run") {
                self.connection.rollback();
                return Err(error.into());
            }
        } else {
            self.connection.rollback();
        }
        result
    }

    /// Registers (or re-registers) a worker and its queues.
    pub fn register_worker(
        &mut self,
        name: &str,
        owner_prefix: &str,
        queues: &[String],
        concurrency: usize,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        let queues = queues.join(",");
        self.connection
            .transaction("register worker", |connection| {
                connection.execute(
                    "register worker",
                    "DELETE FROM wf_workers WHERE name = ?1",
                    args![name],
                )?;
                connection.execute(
                    "register worker",
                    "INSERT INTO wf_workers (name, owner_prefix, queues, concurrency, started_ms, \
                 heartbeat_ms, status) VALUES (?1, ?2, ?3, ?4, ?5, ?5, 'running')",
                    args![name, owner_prefix, &queues, concurrency as i64, now],
                )
            })?;
        Ok(())
    }

    /// Records a worker's heartbeat and status (`running`, `draining`,
    /// `stopped`).
    pub fn worker_heartbeat(&mut self, name: &str, status: &str) -> Result<(), StoreError> {
        let now = self.now_ms();
        let stopped = (status == "stopped").then_some(now);
        self.connection.execute(
            "worker heartbeat",
            "UPDATE wf_workers SET heartbeat_ms = ?2, status = ?3, stopped_ms = ?4 WHERE name = ?1",
            args![name, now, status, stopped],
        )?;
        Ok(())
    }

    /// Registered workers, newest heartbeat first, each with its leases.
    pub fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let mut workers = self.records(
            "list workers",
            "SELECT name, owner_prefix, queues, concurrency, started_ms, heartbeat_ms, stopped_ms, \
             status FROM wf_workers ORDER BY heartbeat_ms DESC, name",
            &[],
            |row| {
                Ok(WorkerRecord {
                    name: row.text(0)?,
                    owner_prefix: row.text(1)?,
                    queues: row.text(2)?.split(',').map(str::to_string).collect(),
                    concurrency: row.i64(3)?,
                    started_ms: row.i64(4)?,
                    heartbeat_ms: row.i64(5)?,
                    stopped_ms: row.opt_i64(6)?,
                    status: row.text(7)?,
                    leases: Vec::new(),
                })
            },
        )?;
        for worker in &mut workers {
            let prefix_length = worker.owner_prefix.chars().count() as i64;
            worker.leases = self.records(
                "list leases",
                "SELECT id, current_state, lease_token, lease_expires_ms FROM wf_runs \
                 WHERE status = 'running' AND lease_owner IS NOT NULL \
                 AND substr(lease_owner, 1, ?2) = ?1 ORDER BY id",
                args![&worker.owner_prefix, prefix_length],
                |row| Ok((row.i64(0)?, row.text(1)?, row.i64(2)?, row.opt_i64(3)?)),
            )?;
        }
        Ok(workers)
    }

    /// Notes that an attempt's result was refused by fencing: the action ran
    /// (its side effect happened), but another executor had taken the run.
    /// Not fenced, and not part of the run's event log.
    pub fn record_superseded(
        &mut self,
        lease: &Lease,
        step: i64,
        attempt: i64,
        idempotency_key: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        self.connection.execute(
            "record superseded attempt",
            "INSERT INTO wf_superseded (run_id, step, attempt, idempotency_key, owner, lease_token, \
             at_ms, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            args![
                lease.run_id,
                step,
                attempt,
                idempotency_key,
                &lease.owner,
                lease.token,
                now,
                detail
            ],
        )?;
        Ok(())
    }

    /// The superseded attempts of a run (all runs with `None`).
    pub fn superseded(&self, run_id: Option<i64>) -> Result<Vec<SupersededRecord>, StoreError> {
        self.records(
            "list superseded attempts",
            "SELECT run_id, step, attempt, idempotency_key, owner, lease_token, at_ms, detail \
             FROM wf_superseded WHERE (CAST(?1 AS BIGINT) IS NULL OR run_id = ?1) ORDER BY id",
            args![run_id],
            |row| {
                Ok(SupersededRecord {
                    run_id: row.i64(0)?,
                    step: row.i64(1)?,
                    attempt: row.i64(2)?,
                    idempotency_key: row.text(3)?,
                    owner: row.text(4)?,
                    lease_token: row.i64(5)?,
                    at_ms: row.i64(6)?,
                    detail: row.text(7)?,
                })
            },
        )
    }
}
