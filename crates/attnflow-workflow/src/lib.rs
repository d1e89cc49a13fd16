//! Durable workflow state machines with retries, crash recovery and Markov
//! analysis of their history (the paper's §5 and figure 2).
//!
//! * [`spec`]: the TOML form of `W = (S, A, T, s0)`, validated with
//!   file:line:column errors; [`Spec::default_spec`] is figure 2.
//! * [`action`]: built-in tasks in a [`TaskRegistry`] that other crates
//!   extend, and external commands; every attempt gets a stable idempotency
//!   key.
//! * [`store`]: the run store, in SQLite (WAL, `synchronous=FULL`) or
//!   PostgreSQL, with leases and fencing, an append-only event log, forward
//!   migrations, and what workers need (claims, registrations).
//! * [`worker`]: `attnflow worker`: slots that claim runnable runs from
//!   their queues and drive them, woken by notifications, drained on
//!   SIGTERM.
//! * [`runner`]: drives a run to a terminal state and resumes it after a
//!   crash from the last recorded state.
//! * [`markov`] and [`report`]: §5.2's estimated transition matrix and
//!   §5.3's absorption analysis, as tables, JSON and Mermaid diagrams.
//! * [`uncertainty`]: intervals for every estimate (Dirichlet posteriors
//!   over the counts) and how many more runs would narrow them.
//! * [`visits`]: the exact chain of a spec with bounded retries, whose
//!   states carry how often each capped state was visited.

pub mod action;
pub mod markov;
mod outcome;
pub mod report;
pub mod runner;
pub mod spec;
pub mod store;
pub mod uncertainty;
pub mod visits;
pub mod worker;

pub use action::{Task, TaskContext, TaskOutput, TaskRegistry};
pub use attnflow_store::{DbError, Location};
pub use runner::{Progress, RunError, Runner};
pub use spec::{Outcome, Spec, SpecError};
pub use store::{RunRecord, RunStatus, Store, StoreError};
