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

/// CPU time summed over `pids`, and their summed RSS; `None` without pids.
pub fn read_all(pids: &[u32]) -> Option<(Duration, u64)> {
    if pids.is_empty() {
        return None;
    }
    let mut cpu = Duration::ZERO;
    let mut rss = 0;
    for p in pids {
        let (c, r) = read(*p)?;
        cpu += c;
        rss += r;
    }
    Some((cpu, rss))
}

/// The soft "Max open files" of `pid`, from /proc/PID/limits (`None` if
/// unreadable or unlimited).
pub fn open_files_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The kernel's count of connections dropped because a listen queue was full
/// (`TcpExt: ListenOverflows` in /proc/net/netstat): for the whole network
/// namespace, so other listeners count too.
pub fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// Connections dropped for a full listen queue since `before` (a
/// [`listen_overflows`]): each one's SYN is retried after 1 s, 3 s, ..., the
/// long tail of connect times.
pub fn listen_overflows_since(before: Option<u64>) -> Option<u64> {
    Some(listen_overflows()?.saturating_sub(before?))
}
