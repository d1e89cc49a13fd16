//! Flushing a file that another part of the process writes, from any
//! thread, without a descriptor of one's own.

use std::path::Path;

/// A file this process already has open, found by its path, whose written
/// data can be flushed to disk from another thread (a bulk load's pages,
/// so that its final fsync finds little left to write).
///
/// It never opens or closes a descriptor of the file. Closing any
/// descriptor of a file drops every POSIX lock the process holds on it,
/// SQLite's included: a second descriptor, opened and closed beside an
/// SQLite connection, is a known way to corrupt its database.
#[derive(Debug, Clone, Copy)]
pub struct OpenFile {
    #[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
    descriptor: i32,
}

impl OpenFile {
    /// One of this process's descriptors open on `path` (on Linux, from
    /// `/proc/self/fd`); `None` where there is none, or elsewhere.
    pub fn find(path: &Path) -> Option<OpenFile> {
        if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            return None;
        }
        let wanted = std::fs::canonicalize(path).ok()?;
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let descriptor: i32 = entry.file_name().to_str()?.parse().ok()?;
                (std::fs::read_link(entry.path()).ok()? == wanted)
                    .then_some(OpenFile { descriptor })
            })
    }

    /// Writes the file's data to disk (`fdatasync`). False when that
    /// failed, as when the descriptor was closed meanwhile (its number may
    /// then name another file, which a flush does no harm).
    pub fn sync_data(&self) -> bool {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: fdatasync takes a descriptor number and no memory; on a
        // closed or reused number it fails or flushes that file, both
        // harmless. The descriptor is never closed here.
        unsafe {
            libc::fdatasync(self.descriptor) == 0
        }
        #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
        false
    }
}

#[cfg(test)]
mod tests {
    use super::OpenFile;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn finds_and_flushes_a_file_the_process_has_open() {
        use std::io::Write;
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("data.bin");
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&[7; 4096]).unwrap();
        let found = OpenFile::find(&path).expect("the file is open");
        assert!(found.sync_data());
        drop(file);
        assert!(
            OpenFile::find(&path).is_none(),
            "no descriptor is left open"
        );
        assert!(OpenFile::find(&directory.path().join("absent")).is_none());
    }
}
