//! The peak memory of this process, and handing freed memory back.

/// Peak resident set size of this process so far, in bytes (Linux `VmHWM`
/// from `/proc/self/status`; `None` elsewhere).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

/// Hands memory that was freed back to the operating system.
///
/// glibc gives each thread that allocates its own arena and keeps what is
/// freed there for reuse. A job that runs fresh threads (a data check's
/// reader, checkers and store writer; SQLite's page cache lives in the
/// writer's arena) can leave tens of MB in arenas that the next job's
/// threads do not get back, so a long-lived process (the web app, a worker,
/// a bench's rounds) grows by that much per job. Called when such a job
/// ends. Elsewhere than glibc it does nothing.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it
    // takes no pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn grows_when_memory_is_touched() {
        let before = super::peak_rss_bytes().unwrap();
        let block = vec![1u8; 64 << 20];
        let after = super::peak_rss_bytes().unwrap();
        assert!(block.iter().map(|&b| b as u64).sum::<u64>() == 64 << 20);
        assert!(after >= before + (60 << 20), "{before} -> {after}");
    }
}
