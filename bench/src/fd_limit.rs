//! The open-file limit (RLIMIT_NOFILE): one descriptor per connection.

use rlimit::Resource;

use crate::proc_stats;

/// Descriptors the generator needs besides its connections.
const SPARE: u64 = 256;

/// Raises the soft limit to the hard one, and the hard one too when the
/// process may (root, CAP_SYS_RESOURCE), so that `connections` sockets fit.
/// Returns the limit now in force, or why it is too low.
pub fn ensure(connections: usize) -> Result<u64, String> {
    let needed = connections as u64 + SPARE;
    let (soft, hard) = Resource::NOFILE
        .get()
        .map_err(|e| format!("cannot read RLIMIT_NOFILE: {e}"))?;
    if soft >= needed {
        return Ok(soft);
    }
    if hard < needed && Resource::NOFILE.set(needed, needed).is_ok() {
        return Ok(needed);
    }
    Resource::NOFILE
        .set(hard, hard)
        .map_err(|e| format!("cannot raise RLIMIT_NOFILE to {hard}: {e}"))?;
    if hard >= needed {
        Ok(hard)
    } else {
        Err(format!(
            "the open-file limit is {hard}, too low for {connections} connections \
             (need about {needed}): raise it, e.g. `ulimit -n {needed}` as root, \
             and the server's too"
        ))
    }
}

/// Says so when a server (by pid) may not hold `connections` for lack of
/// descriptors; the run goes on, and its failures will show it.
pub fn warn_if_servers_short(pids: &[u32], connections: usize) {
    for &pid in pids {
        let Some(limit) = proc_stats::open_files_limit(pid) else {
            continue;
        };
        if limit < connections as u64 + 64 {
            eprintln!(
                "warning: server pid {pid} may open only {limit} files, fewer than \
                 {connections} connections need: start it with a higher `ulimit -n`"
            );
        }
    }
}
