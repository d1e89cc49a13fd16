//! What every request can reach: the configuration, the run folders, the
//! open stores and the session's CSRF secret.

use attnflow_data::store::Store as DataStore;
use attnflow_store::Location;
use attnflow_workflow::Store as WorkflowStore;

use crate::catalog::Catalog;
use crate::stores::Pool;

/// The server's state, shared by every request.
pub struct App {
    /// The main store: workflow runs and their history (and, when `data
    /// check` wrote into it, a quarantine).
    pub store: Location,
    /// Refuse every change (the quarantine re-check).
    pub read_only: bool,
    /// The token every request must carry, when one is set.
    pub token: Option<String>,
    /// The value forms carry to prove they came from this server's pages.
    pub csrf: String,
    /// `Host` header values accepted when there is no token: the
    /// loopback names of the bound port (a DNS-rebinding defence).
    pub allowed_hosts: Vec<String>,
    /// The workflow name `attnflow run` records its runs under.
    pub pipeline_workflow: String,
    /// The run folders.
    pub catalog: Catalog,
    /// Open workflow stores.
    pub workflow_stores: Pool<WorkflowStore>,
    /// Open data stores (queues and quarantines).
    pub data_stores: Pool<DataStore>,
}

impl App {
    /// What the page frame shows about the server.
    pub fn store_label(&self) -> String {
        self.store.to_string()
    }
}
