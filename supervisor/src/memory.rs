//! A memory guard for sandboxes whose kernel cannot kill a single process
//! when the pod runs out of memory (gVisor: the host's OOM killer can only
//! kill the whole sandbox). The supervisor polls the pod's processes and
//! kills the largest one when their resident memory together passes the
//! pod's limit, as the kernel's cgroup OOM killer does for youki pods.

use std::path::Path;

/// A process and the memory it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcMem {
    pub pid: i32,
    /// Resident bytes.
    pub rss_bytes: u64,
    /// Its command name.
    pub name: String,
}

/// Every process under `proc` (a procfs mount) but `skip` (the supervisor).
pub fn read_processes(proc: &Path, page_size: u64, skip: i32) -> Vec<ProcMem> {
    let Ok(entries) = std::fs::read_dir(proc) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| *pid != skip)
        .filter_map(|pid| {
            let statm = std::fs::read_to_string(proc.join(pid.to_string()).join("statm")).ok()?;
            let rss_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
            let name = std::fs::read_to_string(proc.join(pid.to_string()).join("comm")).unwrap_or_default().trim().to_owned();
            Some(ProcMem { pid, rss_bytes: rss_pages * page_size, name })
        })
        .collect()
}

/// The process to kill when `procs` together hold more than `limit` bytes:
/// the largest.
pub fn victim(procs: &[ProcMem], limit: u64) -> Option<&ProcMem> {
    let total: u64 = procs.iter().map(|p| p.rss_bytes).sum();
    if total <= limit {
        return None;
    }
    procs.iter().max_by_key(|p| p.rss_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_process_goes_only_when_the_pod_is_over_its_limit() {
        let p = |pid, mib: u64| ProcMem { pid, rss_bytes: mib << 20, name: format!("p{pid}") };
        let procs = vec![p(2, 100), p(3, 1500), p(4, 300)];
        assert_eq!(victim(&procs, 2048 << 20), None);
        assert_eq!(victim(&procs, 1800 << 20).map(|v| v.pid), Some(3));
        assert_eq!(victim(&[], 0), None);
    }

    #[test]
    fn this_process_is_found_in_proc() {
        let me = std::process::id() as i32;
        let all = read_processes(Path::new("/proc"), 4096, -1);
        let mine = all.iter().find(|p| p.pid == me).expect("listed");
        assert!(mine.rss_bytes > 0);
        assert!(!read_processes(Path::new("/proc"), 4096, me).iter().any(|p| p.pid == me));
    }
}
