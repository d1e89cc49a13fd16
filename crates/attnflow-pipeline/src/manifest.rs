//! The manifest: every artifact of a run with its size and SHA-256,
//! written last by the Storage step, so a finished run folder can prove
//! what it holds.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::folder::files;
use crate::{PipelineError, Result};

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The pipeline's name.
    pub pipeline: String,
    /// The workflow store holding the run's history.
    pub store: PathBuf,
    /// The run's data store (queue and quarantine), which stays live
    /// (`attnflow data recheck` changes it), so it is named, not hashed.
    pub data_store: PathBuf,
    /// Every other file of the run folder, in path order.
    pub artifacts: Vec<Artifact>,
}

/// One file of a run folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The path relative to the run folder, with `/` separators.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the contents, lowercase hex.
    pub sha256: String,
}

/// A listed file that is missing or differs from its record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// The listed path.
    pub file: String,
    /// What differs.
    pub problem: String,
}

impl Manifest {
    /// Lists every file under `run_dir` except the manifest itself and the
    /// live data store, with sizes and digests.
    pub fn of_folder(
        run_dir: &Path,
        pipeline: &str,
        store: &Path,
        data_store: &Path,
    ) -> Result<Self> {
        let mut paths = Vec::new();
        collect(run_dir, run_dir, &mut paths)?;
        paths.sort();
        let artifacts = paths
            .into_iter()
            .map(|file| {
                let path = run_dir.join(&file);
                let (sha256, bytes) = attnflow_base::digest::sha256_file(&path)
                    .map_err(|source| PipelineError::io(&path, source))?;
                Ok(Artifact {
                    file,
                    bytes,
                    sha256,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Manifest {
            pipeline: pipeline.to_string(),
            store: store.to_path_buf(),
            data_store: data_store.to_path_buf(),
            artifacts,
        })
    }

    /// Checks every listed file against its record: present, same size,
    /// same digest.
    pub fn verify(&self, run_dir: &Path) -> Vec<Mismatch> {
        self.artifacts
            .iter()
            .filter_map(|artifact| {
                let path = run_dir.join(&artifact.file);
                let problem = match attnflow_base::digest::sha256_file(&path) {
                    Err(error) => format!("cannot be read: {error}"),
                    Ok((_, bytes)) if bytes != artifact.bytes => {
                        format!("has {bytes} bytes, the manifest records {}", artifact.bytes)
                    }
                    Ok((sha256, _)) if sha256 != artifact.sha256 => {
                        format!(
                            "has SHA-256 {sha256}, the manifest records {}",
                            artifact.sha256
                        )
                    }
                    Ok(_) => return None,
                };
                Some(Mismatch {
                    file: artifact.file.clone(),
                    problem,
                })
            })
            .collect()
    }
}

/// Whether a file of the run folder is left out of the manifest: the
/// manifest itself, and the live SQLite data store with its journal files.
fn left_out(relative: &str) -> bool {
    relative == files::MANIFEST || relative.starts_with(files::DATA_STORE)
}

fn collect(root: &Path, directory: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries =
        std::fs::read_dir(directory).map_err(|source| PipelineError::io(directory, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| PipelineError::io(directory, source))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|source| PipelineError::io(&path, source))?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if kind.is_file() {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            // Temporary files of an interrupted atomic write are not
            // artifacts.
            if !left_out(&relative) && !relative.contains("/.tmp") && !relative.starts_with(".tmp")
            {
                out.push(relative);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_file_but_the_manifest_and_the_live_store_and_detects_changes() {
        let run = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(run.path().join("training")).unwrap();
        for (name, text) in [
            ("quality.json", "{}"),
            ("training/weights-00000100.safetensors", "weights"),
            ("data.sqlite", "live"),
            ("data.sqlite-wal", "live"),
            ("manifest.json", "{}"),
        ] {
            std::fs::write(run.path().join(name), text).unwrap();
        }
        let manifest =
            Manifest::of_folder(run.path(), "p", Path::new("s"), Path::new("d")).unwrap();
        let listed: Vec<&str> = manifest.artifacts.iter().map(|a| a.file.as_str()).collect();
        assert_eq!(
            listed,
            ["quality.json", "training/weights-00000100.safetensors"]
        );
        assert!(manifest.verify(run.path()).is_empty());
        std::fs::write(run.path().join("quality.json"), "{ }").unwrap();
        std::fs::remove_file(run.path().join("training/weights-00000100.safetensors")).unwrap();
        let problems = manifest.verify(run.path());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].problem.contains("bytes"), "{problems:?}");
        assert!(
            problems[1].problem.contains("cannot be read"),
            "{problems:?}"
        );
    }
}
