//! What every benchmark measures with: latency statistics, a closed-loop load, and the
//! process's CPU time, context switches and memory from `/proc`.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Stats {
    pub requests: usize,
    pub errors: usize,
    pub qps: f64,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
}

impl Stats {
    pub fn from_latencies(mut latencies: Vec<Duration>, errors: usize, elapsed: Duration) -> Stats {
        latencies.sort();
        let pick = |q: f64| -> Duration {
            if latencies.is_empty() {
                Duration::ZERO
            } else {
                latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
            }
        };
        Stats {
            requests: latencies.len(),
            errors,
            qps: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: pick(0.50),
            p95: pick(0.95),
            p99: pick(0.99),
        }
    }

    pub(crate) fn from_summary(
        requests: usize,
        errors: usize,
        elapsed: Duration,
        p50: Duration,
        p95: Duration,
        p99: Duration,
    ) -> Stats {
        Stats { requests, errors, qps: requests as f64 / elapsed.as_secs_f64().max(1e-9), p50, p95, p99 }
    }

    pub(crate) fn row(&self, name: &str) -> String {
        let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
        format!(
            "| {name} | {:.0} | {} | {} | {} | {} | {} |",
            self.qps,
            ms(self.p50),
            ms(self.p95),
            ms(self.p99),
            self.requests,
            self.errors
        )
    }
}

/// Runs `concurrency` workers until `duration` is over; each calls `request(i)` with its own
/// running index (offset per worker so they spread over the mix), which answers success or not.
pub(crate) async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, request: F) -> anyhow::Result<Stats>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut i = worker * 7919;
            while Instant::now() < deadline {
                let began = Instant::now();
                if !request(i).await {
                    errors += 1;
                }
                latencies.push(began.elapsed());
                i += 1;
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await?;
        all.extend(latencies);
        errors += e;
    }
    Ok(Stats::from_latencies(all, errors, start.elapsed()))
}

/// CPU seconds used by this process and by its finished children (wrk), from `/proc/self/stat`.
pub(crate) struct CpuTimes {
    pub(crate) own: f64,
    pub(crate) children: f64,
}

impl CpuTimes {
    pub(crate) fn now() -> CpuTimes {
        // Fields 14–17 (utime, stime, cutime, cstime) in clock ticks, counted after the
        // parenthesised command name, which may contain spaces. Linux's tick is 1/100 s.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ticks: Vec<f64> =
            after_name.split_whitespace().skip(11).take(4).map(|v| v.parse().unwrap_or(0.0)).collect();
        let tick = |i: usize| ticks.get(i).copied().unwrap_or(0.0) / 100.0;
        CpuTimes { own: tick(0) + tick(1), children: tick(2) + tick(3) }
    }

    pub(crate) fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes { own: self.own - earlier.own, children: self.children - earlier.children }
    }
}

/// Context switches of this process's live threads so far (voluntary and not), from
/// `/proc/self/task/*/status`; 0 where there is no such file. A thread that ended takes its
/// count along, so a difference may fall short (the services' threads live for the whole run). Each is a thread going to sleep or
/// being preempted: on SQLite every statement is a hop to the connection's thread and back.
pub(crate) fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

pub(crate) fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kib| kib / 1024)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's "context switches per checkout" reads them from /proc: a thread that sleeps
    /// gives up its core, which must show up in the count.
    #[cfg(target_os = "linux")]
    #[test]
    fn context_switches_are_read_from_proc() {
        let before = context_switches();
        std::thread::sleep(Duration::from_millis(5));
        assert!(context_switches() > before, "a sleep is a voluntary switch");
    }
}
