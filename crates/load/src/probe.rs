//! CPU and memory of processes read from `/proc`: the load tool's own and the server's, over a measured window.

use std::sync::OnceLock;

use serde::Serialize;
use tokio::time::Instant;

/// CPU and memory of one process over the measured window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub pid: u32,
    /// utime + stime over the window, in seconds.
    pub cpu_s: f64,
    /// Of one core: 100 is one core busy for the whole window.
    pub cpu_pct: f64,
    /// CPU nanoseconds per delivered message (chat) or per acked vote (votes).
    pub cpu_ns_per_op: Option<f64>,
    pub rss_mib: f64,
    pub rss_before_mib: f64,
}

/// The load tool's own CPU: when it is saturated, the figures measure the tool, not the server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ToolUsage {
    #[serde(flatten)]
    pub usage: Usage,
    /// Runtime worker threads (TOKIO_WORKER_THREADS or the cores).
    pub threads: usize,
    /// cpu_pct / threads.
    pub per_thread_pct: f64,
    /// Above 90% of one core per runtime thread.
    pub saturated: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleFigures {
    pub sessions: u64,
    pub server_rss_delta_bytes: Option<i64>,
    pub server_bytes_per_session: Option<f64>,
    pub tool_bytes_per_session: f64,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ProcSample {
    cpu_ticks: u64,
    rss_bytes: u64,
}

/// `utime + stime` in clock ticks, and RSS, of a process (`None`: this one).
pub(crate) fn read_proc(pid: Option<u32>) -> Option<ProcSample> {
    let dir = pid.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"));
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(ProcSample {
        cpu_ticks: utime + stime,
        rss_bytes: rss_kib * 1024,
    })
}

/// `/proc/<pid>/stat` utime + stime, microseconds (`pid` may be `self` or `thread-self`).
pub(crate) fn proc_cpu_us(pid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at state (field 3).
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux for /proc.
    Some((utime + stime) * 10_000)
}

/// Clock ticks per second for /proc CPU times (`getconf CLK_TCK`, almost always 100).
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

fn runtime_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// CPU and RSS of this process and, when its pid is known, of the server.
pub(crate) struct Probe {
    server_pid: Option<u32>,
    /// Before any session connected: the baseline for RSS per session.
    baseline: (Option<ProcSample>, Option<ProcSample>),
}

pub(crate) struct Sample {
    at: Instant,
    tool: Option<ProcSample>,
    server: Option<ProcSample>,
}

impl Probe {
    pub(crate) fn start(server_pid: Option<u32>) -> Probe {
        if let Some(pid) = server_pid {
            if read_proc(Some(pid)).is_none() {
                tracing::warn!(
                    pid,
                    "cannot read /proc/{pid}: server CPU and RSS will be missing"
                );
            }
        }
        Probe {
            server_pid,
            baseline: (read_proc(None), server_pid.and_then(|p| read_proc(Some(p)))),
        }
    }

    pub(crate) fn sample(&self) -> Sample {
        Sample {
            at: Instant::now(),
            tool: read_proc(None),
            server: self.server_pid.and_then(|p| read_proc(Some(p))),
        }
    }

    pub(crate) fn idle(&self, sessions: u64, now: &Sample) -> IdleFigures {
        let per = |d: i64| d as f64 / sessions.max(1) as f64;
        let delta = |before: Option<ProcSample>, after: Option<ProcSample>| {
            Some(after?.rss_bytes as i64 - before?.rss_bytes as i64)
        };
        let server = delta(self.baseline.1, now.server);
        IdleFigures {
            sessions,
            server_rss_delta_bytes: server,
            server_bytes_per_session: server.map(per),
            tool_bytes_per_session: delta(self.baseline.0, now.tool).map_or(0.0, per),
        }
    }

    /// Tool and server usage between two samples; `ops` divides CPU into a per-operation cost.
    pub(crate) fn usage(
        &self,
        before: &Sample,
        after: &Sample,
        ops: Option<u64>,
    ) -> (ToolUsage, Option<Usage>) {
        let wall = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
        let ticks = clock_ticks();
        let usage = |pid: u32,
                     b: Option<ProcSample>,
                     a: Option<ProcSample>,
                     base: Option<ProcSample>|
         -> Option<Usage> {
            let (b, a) = (b?, a?);
            let cpu_s = a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / ticks;
            Some(Usage {
                pid,
                cpu_s,
                cpu_pct: cpu_s / wall * 100.0,
                cpu_ns_per_op: ops.filter(|n| *n > 0).map(|n| cpu_s * 1e9 / n as f64),
                rss_mib: a.rss_bytes as f64 / (1 << 20) as f64,
                rss_before_mib: base.map_or(0.0, |s| s.rss_bytes as f64 / (1 << 20) as f64),
            })
        };
        let threads = runtime_threads();
        let tool =
            usage(std::process::id(), before.tool, after.tool, self.baseline.0).unwrap_or_default();
        let per_thread_pct = tool.cpu_pct / threads as f64;
        if per_thread_pct > 90.0 {
            tracing::warn!(
                per_thread_pct,
                "the load tool is saturated: figures measure the tool, not the server"
            );
        }
        let server = self
            .server_pid
            .and_then(|pid| usage(pid, before.server, after.server, self.baseline.1));
        (
            ToolUsage {
                usage: tool,
                threads,
                per_thread_pct,
                saturated: per_thread_pct > 90.0,
            },
            server,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_readable() {
        let s = read_proc(None).expect("/proc/self");
        assert!(s.rss_bytes > 0);
    }
}
