//! Artifact downloads. A file is served only when its run's manifest names
//! it, byte for byte the path asked for, and it still has the size the
//! manifest records; the path must be relative without `.` or `..`, and
//! must not lead out of the run folder through a link. Nothing else on
//! the disk can be reached.

use std::path::{Component, Path, PathBuf};

use attnflow_pipeline::{files as run_files, Artifact, Manifest};
use axum::body::{Body, Bytes};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use tokio::io::AsyncReadExt;

use crate::app::App;
use crate::catalog::read_json;
use crate::error::{PageError, PageResult};
use crate::resolve::resolve;

/// A file a manifest names, checked and ready to send.
#[derive(Debug, Clone)]
pub struct Download {
    /// Where it is.
    pub path: PathBuf,
    /// Its manifest entry.
    pub artifact: Artifact,
}

/// Whether `path` is a plain relative path: parts separated by `/`, none
/// empty, `.` or `..`, no backslash or NUL.
pub fn plain_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains(['\\', '\0'])
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && Path::new(path)
            .components()
            .all(|component| matches!(component, Component::Normal(_)))
}

/// Finds the artifact `requested` of run `key`.
pub fn find(app: &App, key: &str, requested: &str) -> PageResult<Download> {
    if !plain_relative(requested) {
        return Err(PageError::bad_request(format!(
            "`{requested}` is not a file of a run folder: paths are relative to the folder, without `.`, `..` or `\\`"
        )));
    }
    let run = resolve(app, key)?;
    let folder = run
        .folder
        .ok_or_else(|| PageError::not_found(format!("run {key} has no run folder, so no files")))?;
    let manifest_path = folder.path.join(run_files::MANIFEST);
    if !manifest_path.is_file() {
        return Err(PageError::not_found(format!(
            "run {key} has no manifest yet; its files can be downloaded once the Storage step has listed them"
        )));
    }
    let manifest: Manifest = read_json(&manifest_path).map_err(PageError::internal)?;
    let artifact = manifest
        .artifacts
        .into_iter()
        .find(|artifact| artifact.file == requested)
        .ok_or_else(|| {
            PageError::not_found(format!(
                "the manifest of run {key} names no file `{requested}`; only the files it lists can be downloaded"
            ))
        })?;
    let path = folder.path.join(&artifact.file);
    let inside = path
        .canonicalize()
        .is_ok_and(|real| real.starts_with(&folder.path));
    if !inside || !path.is_file() {
        return Err(PageError::forbidden(format!(
            "`{requested}` is not a file inside the run folder (a link out of it, or gone)"
        )));
    }
    let size = std::fs::metadata(&path)
        .map(|metadata| metadata.len())
        .unwrap_or(0);
    if size != artifact.bytes {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            "File changed",
            format!(
                "`{requested}` has {size} bytes but the manifest records {}: it changed after the run, so it is not served",
                artifact.bytes
            ),
        ));
    }
    Ok(Download { path, artifact })
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "json" => "application/json",
        "jsonl" | "toml" | "txt" | "csv" | "md" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

/// The file as a response, streamed. Pages and pictures show in the
/// browser inside a sandbox (their scripts run in an origin of their own,
/// unable to act on this server); everything else downloads.
pub async fn send(download: Download) -> Result<Response, PageError> {
    let file = tokio::fs::File::open(&download.path)
        .await
        .map_err(|error| PageError::internal(format!("{}: {error}", download.artifact.file)))?;
    let stream = futures_util::stream::unfold(file, |mut file| async move {
        let mut buffer = vec![0u8; 64 * 1024];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(buffer)), file))
            }
            Err(error) => Some((Err(error), file)),
        }
    });
    let file = &download.artifact.file;
    let kind = content_type(file);
    let inline = kind.starts_with("text/html") || kind.starts_with("image/");
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(download.artifact.bytes));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&format!("\"{}\"", download.artifact.sha256)) {
        headers.insert(ETAG, value);
    }
    let policy = if inline {
        "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
    } else {
        "sandbox; default-src 'none'; frame-ancestors 'none'"
    };
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    if !inline {
        let name = file.rsplit('/').next().unwrap_or("artifact");
        let ascii: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"")) {
            headers.insert(CONTENT_DISPOSITION, value);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_pass() {
        for good in [
            "report.html",
            "training/weights-00000100.safetensors",
            "a b/c.json",
        ] {
            assert!(plain_relative(good), "{good}");
        }
        for bad in [
            "",
            "../x",
            "a/../../etc/passwd",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/.",
            "a\\..\\b",
            "a\0b",
            "training/",
        ] {
            assert!(!plain_relative(bad), "{bad:?}");
        }
    }
}
