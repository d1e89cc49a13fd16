//! A run key from a URL (`run-ID`, `dir-DIGEST`) to what it names: a
//! workflow run in a store, a run folder, or both. Keys are looked up,
//! never turned into paths, so no URL can name a folder the catalog did
//! not find.

use attnflow_store::Location;

use crate::app::App;
use crate::catalog::FolderRun;
use crate::error::{PageError, PageResult};

/// What a run key names.
#[derive(Debug, Clone)]
pub struct RunRef {
    /// The key.
    pub key: String,
    /// The run folder, when there is one.
    pub folder: Option<FolderRun>,
    /// The workflow run: its store and id.
    pub workflow: Option<(Location, i64)>,
}

/// Resolves `key`; an unknown or malformed key is a 404.
pub fn resolve(app: &App, key: &str) -> PageResult<RunRef> {
    let unknown = || PageError::not_found(format!("no run has the key `{key}`"));
    if let Some(id) = key.strip_prefix("run-") {
        let id: i64 = id
            .parse()
            .ok()
            .filter(|id| *id > 0 && !key.contains('+'))
            .ok_or_else(unknown)?;
        let folder = app
            .catalog
            .folders()
            .iter()
            .find(|folder| folder.linked == Some(id))
            .cloned();
        return Ok(RunRef {
            key: key.to_owned(),
            folder,
            workflow: Some((app.store.clone(), id)),
        });
    }
    let digest = key.strip_prefix("dir-").ok_or_else(unknown)?;
    if digest.len() != 12 || !digest.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(unknown());
    }
    let folder = app.catalog.by_key(key).ok_or_else(unknown)?;
    let workflow = match (&folder.store, &folder.run_file) {
        (Some(store), Some(run)) => Some((store.clone(), run.workflow_run)),
        _ => None,
    };
    Ok(RunRef {
        key: key.to_owned(),
        folder: Some(folder),
        workflow,
    })
}
