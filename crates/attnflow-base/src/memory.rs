//! The peak memory of this process.

/// Peak resident set size of this process so far, in bytes (Linux `VmHWM`
/// from `/proc/self/status`; `None` elsewhere).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
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
