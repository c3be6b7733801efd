//! CPU time and RSS of a process, from /proc.

use std::time::Duration;

/// User + system CPU time and resident set size of `pid`.
pub fn read(pid: u32) -> Option<(Duration, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let ticks = 100; // USER_HZ on Linux
    let cpu = Duration::from_millis((utime + stime) * 1000 / ticks);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((cpu, rss_kib * 1024))
}

/// CPU time summed over `pids`, and their summed RSS.
pub fn read_all(pids: &[u32]) -> Option<(Duration, u64)> {
    let mut cpu = Duration::ZERO;
    let mut rss = 0;
    for p in pids {
        let (c, r) = read(*p)?;
        cpu += c;
        rss += r;
    }
    Some((cpu, rss))
}
