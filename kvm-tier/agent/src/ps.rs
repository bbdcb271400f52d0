//! The answer to `ps`: every process descended from the agent (as PID 1 that is every workload
//! process; under test, those of its sessions, orphans included thanks to the subreaper).

use std::collections::HashMap;

use hull_agent_protocol::msg::MAX_PIDS;

/// Pids of all live descendants of `ancestor`, sorted, at most [`MAX_PIDS`].
pub fn descendants(ancestor: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parent = HashMap::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(ppid) = ppid_of(pid) {
            parent.insert(pid, ppid);
        }
    }
    let mut out: Vec<u32> = parent
        .keys()
        .copied()
        .filter(|&pid| {
            let mut p = pid;
            // Bounded walk: a pid table can never be deeper than its size.
            for _ in 0..parent.len() {
                match parent.get(&p) {
                    Some(&pp) if pp == ancestor => return true,
                    Some(&pp) if pp > 0 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect();
    out.sort_unstable();
    out.truncate(MAX_PIDS);
    out
}

/// The parent pid from `/proc/<pid>/stat` (field 4, after the parenthesised command name,
/// which may itself contain spaces and parentheses).
fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}
