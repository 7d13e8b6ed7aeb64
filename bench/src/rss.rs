//! Peak resident memory per implementation, measured in a child process of its own.
//!
//! The parent re-executes its own binary with `--only IMPL --bound BOUND --item ITEM --producers P
//! --batch B --n N`; the child builds the same runtime, runs that one case once, checks it, and prints a
//! [`CHILD_LINE`] line with its `VmHWM` (the peak resident set, from `/proc/self/status`). A
//! child with `--only idle` builds the runtime and runs nothing: the baseline every row carries.

use std::process::Command;

use crate::peers::Impl;
use crate::suite::Case;

/// The prefix of the line a child prints for the parent.
pub(crate) const CHILD_LINE: &str = "batch-bench-child:";

/// The `--only` value of the baseline child.
pub(crate) const IDLE: &str = "idle";

/// This process's peak resident set in KiB (`VmHWM`), where the kernel reports it (Linux).
pub(crate) fn peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()
}

/// The line a child prints at the end of its run.
pub(crate) fn child_line(peak_kib: Option<u64>) -> String {
    format!("{CHILD_LINE} vm_hwm_kib={}", peak_kib.map_or_else(|| "n/a".to_owned(), |k| k.to_string()))
}

/// Runs `case` (or, with `imp` = `None`, the idle baseline) on `n` items in a child process and
/// returns its peak RSS in KiB (`None` where the platform does not report it).
pub(crate) fn measure(imp: Option<Impl>, case: Case, n: u64) -> Result<Option<u64>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating this binary: {e}"))?;
    let mut cmd = Command::new(&exe);
    cmd.args(["--only", imp.map_or(IDLE, Impl::id)])
        .args(["--bound", case.bound.id()])
        .args(["--item", case.item.name()])
        .args(["--producers", &case.producers.to_string()])
        .args(["--batch", &case.batch.to_string()])
        .args(["--n", &n.to_string()]);
    let out = cmd.output().map_err(|e| format!("starting {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "the child for {} ({case}) failed with {}: {}{}",
            imp.map_or(IDLE, Impl::id),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(CHILD_LINE))
        .ok_or_else(|| format!("the child printed no `{CHILD_LINE}` line: {stdout}"))?;
    let value = line.trim().strip_prefix("vm_hwm_kib=").ok_or_else(|| format!("bad child line `{line}`"))?;
    Ok(value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_hwm() {
        let status = "Name:\tx\nVmPeak:\t  10000 kB\nVmHWM:\t    5120 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(5120));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn own_peak_is_reported() {
        assert!(peak_kib().is_some_and(|k| k > 0));
    }
}
