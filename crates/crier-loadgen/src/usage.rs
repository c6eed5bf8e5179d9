//! What a process has used, read from Linux's `/proc`: CPU time (user +
//! system, all threads), resident memory now and at its peak, and the
//! open-file limit. Read-only; never signals or otherwise touches the
//! process it looks at.

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context};

/// Clock ticks per second in `/proc/PID/stat` (`sysconf(_SC_CLK_TCK)`),
/// 100 on every Linux architecture crier builds for.
const CLOCK_TICKS: u64 = 100;

/// Which process to look at.
#[derive(Debug, Clone, Copy)]
pub enum Pid {
    /// The load generator itself.
    This,
    /// Another process, by id (the server under test).
    Other(u32),
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pid::This => f.write_str("self"),
            Pid::Other(pid) => write!(f, "{pid}"),
        }
    }
}

/// Resident memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident now (`VmRSS`).
    pub rss: u64,
    /// The most it has ever been resident (`VmHWM`).
    pub peak: u64,
    /// Resident now in anonymous pages (`RssAnon`): the heap and stacks,
    /// without the code and file pages that move `rss` by megabytes
    /// between runs of the same binary. `None` before Linux 4.5.
    pub anon: Option<u64>,
}

fn read(pid: Pid, file: &str) -> anyhow::Result<String> {
    let path = format!("/proc/{pid}/{file}");
    std::fs::read_to_string(&path).with_context(|| match pid {
        Pid::Other(_) => format!("cannot read {path} (is the pid right, and is this Linux?)"),
        Pid::This => format!("cannot read {path}"),
    })
}

/// CPU time the process has used so far.
pub fn cpu_time(pid: Pid) -> anyhow::Result<Duration> {
    let stat = read(pid, "stat")?;
    match parse_stat_ticks(&stat) {
        Some(ticks) => Ok(Duration::from_millis(ticks * 1_000 / CLOCK_TICKS)),
        None => bail!("cannot read CPU times from /proc/{pid}/stat"),
    }
}

/// utime + stime from `/proc/PID/stat`, in clock ticks. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted from
/// its closing parenthesis: utime and stime are fields 14 and 15.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory now and at its peak.
pub fn memory(pid: Pid) -> anyhow::Result<Memory> {
    let status = read(pid, "status")?;
    match (status_kib(&status, "VmRSS:"), status_kib(&status, "VmHWM:")) {
        (Some(rss), Some(peak)) => Ok(Memory {
            rss: rss * 1024,
            peak: peak * 1024,
            anon: status_kib(&status, "RssAnon:").map(|kib| kib * 1024),
        }),
        _ => bail!("no VmRSS/VmHWM in /proc/{pid}/status"),
    }
}

/// A `Name:   123 kB` line of `/proc/PID/status`, in KiB.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_ascii_whitespace().next()?.parse().ok()
}

/// The soft open-file limit of a process, from `/proc/PID/limits`.
pub fn open_file_limit(pid: Pid) -> Option<u64> {
    let limits = read(pid, "limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_end_of_the_name() {
        let stat = "4242 (crier (a) b) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1234 567 0 0 20 0 3 0 100 \
                    1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_lines_in_kib() {
        let status = "Name:\tcrier\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nRssAnon:\t    4096 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10240));
        assert_eq!(status_kib(status, "RssAnon:"), Some(4096));
        assert_eq!(status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_is_readable() {
        let memory = memory(Pid::This).unwrap();
        assert!(memory.rss > 0);
        assert!(memory.anon.is_some_and(|anon| anon > 0 && anon <= memory.rss));
        cpu_time(Pid::This).unwrap();
        assert!(open_file_limit(Pid::This).unwrap() > 0);
    }
}
