//! The stores the pages read: opened without creating or migrating
//! anything, kept open between requests, and every way they can fail said
//! as a page (missing, locked, older or newer tables, server gone).

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::Duration;

use attnflow_data::store::Store as DataStore;
use attnflow_data::DataError;
use attnflow_store::{Backend, DbError, Location};
use attnflow_workflow::{Store as WorkflowStore, StoreError};

use crate::error::PageError;

/// How long a reader waits for another process's lock before the page
/// says the store is locked.
pub const READ_WAIT: Duration = Duration::from_secs(2);

/// How long a re-check waits for another writer.
pub const WRITE_WAIT: Duration = Duration::from_secs(10);

/// Idle connections kept per store.
const IDLE_PER_STORE: usize = 4;

/// A store as a page reports its failure.
pub fn db_error(error: &DbError) -> PageError {
    if error.is_busy() {
        return PageError::unavailable(format!(
            "{error}. Another process holds a lock on the store (a migration, a copy or a long write); try again in a moment."
        ));
    }
    match error {
        DbError::NotAStore { store, reason } if reason == "no such file" => {
            PageError::unavailable(format!(
                "the store {store} does not exist. Run `attnflow run` or `attnflow workflow run --db {store}` to make one, or start `attnflow ui --db STORE` with an existing store."
            ))
        }
        _ if error.is_bad_input() || error.is_lost() => PageError::unavailable(error.to_string()),
        _ => PageError::internal(error.to_string()),
    }
}

/// A workflow store error as a page.
pub fn workflow_error(error: &StoreError) -> PageError {
    match error {
        StoreError::Db(error) => db_error(error),
        StoreError::UnknownRun { .. } => PageError::not_found(error.to_string()),
        other => PageError::internal(other.to_string()),
    }
}

/// A data store error as a page.
pub fn data_error(error: &DataError) -> PageError {
    match error {
        DataError::Db(error) => db_error(error),
        DataError::Schema { .. } => PageError::bad_request(error.to_string()),
        other => PageError::internal(other.to_string()),
    }
}

/// A store the pool can keep: opened for reading, checked on reuse.
pub trait Pooled: Send + Sized + 'static {
    /// Opens the store at `location`, waiting at most `wait` for a lock.
    fn open(location: &Location, wait: Duration) -> Result<Self, PageError>;
    /// Whether a kept connection still answers (a PostgreSQL server may
    /// have restarted since).
    fn alive(&self) -> bool;
}

fn ping(connection: &attnflow_store::Connection) -> bool {
    connection.backend() == Backend::Sqlite || connection.query_i64("ping", "SELECT 1", &[]).is_ok()
}

impl Pooled for WorkflowStore {
    fn open(location: &Location, wait: Duration) -> Result<Self, PageError> {
        WorkflowStore::open_existing(location, wait).map_err(|error| workflow_error(&error))
    }

    fn alive(&self) -> bool {
        ping(self.connection())
    }
}

impl Pooled for DataStore {
    fn open(location: &Location, wait: Duration) -> Result<Self, PageError> {
        DataStore::open_existing(location, wait).map_err(|error| data_error(&error))
    }

    fn alive(&self) -> bool {
        ping(self.connection())
    }
}

/// Open stores of one kind by location, reused across requests.
pub struct Pool<T: Pooled> {
    idle: Mutex<HashMap<String, Vec<T>>>,
}

impl<T: Pooled> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            idle: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Pooled> Pool<T> {
    /// A store at `location`: an idle one that still answers, or a new one.
    pub fn get(&self, location: &Location) -> Result<Lease<'_, T>, PageError> {
        let key = location.argument();
        loop {
            let kept = self
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get_mut(&key)
                .and_then(Vec::pop);
            match kept {
                Some(store) if store.alive() => {
                    return Ok(Lease {
                        pool: self,
                        key,
                        store: Some(store),
                    })
                }
                Some(_) => continue,
                None => break,
            }
        }
        let store = T::open(location, READ_WAIT)?;
        Ok(Lease {
            pool: self,
            key,
            store: Some(store),
        })
    }
}

/// A store borrowed from a [`Pool`]; it goes back when dropped.
pub struct Lease<'a, T: Pooled> {
    pool: &'a Pool<T>,
    key: String,
    store: Option<T>,
}

impl<T: Pooled> Deref for Lease<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.store
            .as_ref()
            .expect("a lease holds its store until dropped")
    }
}

impl<T: Pooled> DerefMut for Lease<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.store
            .as_mut()
            .expect("a lease holds its store until dropped")
    }
}

impl<T: Pooled> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            let mut idle = self
                .pool
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let kept = idle.entry(std::mem::take(&mut self.key)).or_default();
            if kept.len() < IDLE_PER_STORE {
                kept.push(store);
            }
        }
    }
}
