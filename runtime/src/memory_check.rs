//! A start-up check of the process's memory against its container's limit: every ONNX Runtime
//! session holds its own copy of a model's weights (measured: 242 MB resident with 2 sessions per
//! model, 787 MB with 8), and the default session count follows the cores the process sees,
//! which in a container without a CPU limit are the whole node's. A pod that would be
//! OOM-killed under load says so at start instead.

use std::path::{Path, PathBuf};

/// Share of the memory limit the models and the body budget may take before the warning.
pub const WARN_SHARE: f64 = facekey_settings::defaults::MEMORY_SHARE;

/// The warning for a process holding `resident` bytes after loading its models, that may hold
/// `body_budget` more bytes of request bodies, under a memory limit of `limit` bytes; `None`
/// when that fits in [`WARN_SHARE`] of the limit.
pub fn warning(
    resident: u64,
    body_budget: u64,
    limit: u64,
    sessions_per_model: usize,
) -> Option<String> {
    let needed = resident.saturating_add(body_budget);
    let mib = |b: u64| b / (1024 * 1024);
    ((needed as f64) > WARN_SHARE * limit as f64).then(|| {
        format!(
            "the models take {} MiB with {sessions_per_model} session(s) per model and request \
             bodies may take {} MiB more: {} of the {} MiB memory limit, before templates and \
             inference buffers; under load the process may be OOM-killed. Lower \
             FACEKEY_SESSIONS_PER_MODEL and FACEKEY_MAX_INFLIGHT (each session holds its own \
             copy of the weights), or raise the limit",
            mib(resident),
            mib(body_budget),
            mib(needed),
            mib(limit)
        )
    })
}

/// This process's resident memory in bytes (`VmRSS` of `/proc/self/status`), where readable.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// The memory limit of this process's cgroup in bytes (v2 `memory.max`, or v1
/// `memory.limit_in_bytes`, of the cgroup `/proc/self/cgroup` names); `None` when there is none
/// or it cannot be read.
pub fn cgroup_limit_bytes() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    limit_files(&own)
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| parse_limit(&text))
}

/// Where the memory limit of the cgroup described by `/proc/self/cgroup`'s `text` is, most
/// specific first: v2 (`0::/path`), then v1 (`N:memory:/path`), then the mount roots (in a
/// container with its own cgroup namespace the paths are `/`).
fn limit_files(text: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut files = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            files.push(root.join(path).join("memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            files.push(root.join("memory").join(path).join("memory.limit_in_bytes"));
        }
    }
    files.push(root.join("memory.max"));
    files.push(root.join("memory/memory.limit_in_bytes"));
    files
}

/// `VmRSS:  1234 kB` in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A cgroup limit file's value: `max` (v2) or a huge v1 value means no limit.
fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    // cgroup v1 reports "no limit" as a page-rounded i64::MAX.
    (value < (1 << 62)).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn warns_only_past_the_share_of_the_limit() {
        // The default: 2 sessions, 128 MiB of bodies, 1 GiB limit.
        assert_eq!(warning(242 * MIB, 128 * MIB, 1024 * MIB, 2), None);
        // 8 sessions on a big node under the same limit.
        let w = warning(787 * MIB, 128 * MIB, 1024 * MIB, 8);
        let w = w.as_deref().unwrap_or_default();
        assert!(w.contains("787 MiB with 8 session(s)"), "{w}");
        assert!(w.contains("915 of the 1024 MiB"), "{w}");
        assert!(w.contains("FACEKEY_SESSIONS_PER_MODEL"), "{w}");
    }

    #[test]
    fn parses_proc_and_cgroup_files() {
        let status = "Name:\tfacekey-runtime\nVmPeak:\t  900 kB\nVmRSS:\t  241968 kB\n";
        assert_eq!(parse_vm_rss(status), Some(241_968 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert_eq!(parse_limit("1073741824\n"), Some(1024 * MIB));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
    }

    #[test]
    fn finds_the_limit_file_of_its_own_cgroup() {
        let v2 = limit_files("0::/kubepods/pod1/c1\n");
        assert_eq!(
            v2[0],
            Path::new("/sys/fs/cgroup/kubepods/pod1/c1/memory.max")
        );
        let v1 = limit_files("4:cpu,cpuacct:/x\n9:memory:/docker/abc\n");
        assert_eq!(
            v1[0],
            Path::new("/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes")
        );
        // A namespaced container sees `/`: the roots.
        assert_eq!(
            limit_files("0::/\n")[0],
            Path::new("/sys/fs/cgroup/memory.max")
        );
        assert_eq!(limit_files("").len(), 2);
    }
}
