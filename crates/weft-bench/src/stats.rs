//! Measurement helpers: percentiles in the peers' convention, process memory
//! from `/proc/self/status`, and the CPU other tenants of the machine used
//! while a scenario ran (the peers' `foreign_cpu_cores`).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// Linear interpolation between closest ranks, as `benchlib.pct` does.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let k = (sorted.len() - 1) as f64 * p / 100.0;
    let f = k.floor() as usize;
    let c = (f + 1).min(sorted.len() - 1);
    sorted[f] + (sorted[c] - sorted[f]) * (k - f as f64)
}

pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// `{"n", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms"}` like `benchlib.lat_summary`.
pub fn latency_summary(ms: &[f64]) -> Value {
    let max = ms.iter().copied().fold(f64::NAN, f64::max);
    let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
    json!({
        "n": ms.len(),
        "p50_ms": round(percentile(ms, 50.0), 3),
        "p95_ms": round(percentile(ms, 95.0), 3),
        "p99_ms": round(percentile(ms, 99.0), 3),
        "max_ms": round(max, 3),
        "mean_ms": round(mean, 3),
    })
}

fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
}

/// Resident set size of this process now, in MB.
pub fn rss_mb() -> Option<f64> {
    status_kb("VmRSS:").map(|kb| kb as f64 / 1024.0)
}

/// Peak resident set size of this process (since start or the last `reset_peak_rss`), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    status_kb("VmHWM:").map(|kb| kb as f64 / 1024.0)
}

/// Resets the kernel's peak-RSS mark to the current RSS, so that a phase's
/// peak can be read afterwards. Returns false where the kernel refuses.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A field of `/proc/<pid>/status` (kB), of another process.
fn pid_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
}

/// Peak resident set size (VmHWM) of process `pid` over its life, in MB.
pub fn pid_peak_rss_mb(pid: u32) -> Option<f64> {
    pid_status_kb(pid, "VmHWM:").map(|kb| kb as f64 / 1024.0)
}

/// Resident set size now of `root` and every process below it, summed, in MB.
pub fn tree_rss_mb(root: u32) -> f64 {
    let table = proc_table();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, entry) in &table {
        children.entry(entry.ppid).or_default().push(pid);
    }
    let (mut kb, mut stack, mut seen) = (0u64, vec![root], HashSet::new());
    while let Some(pid) = stack.pop() {
        if seen.insert(pid) {
            kb += pid_status_kb(pid, "VmRSS:").unwrap_or(0);
            stack.extend(children.get(&pid).into_iter().flatten().copied());
        }
    }
    kb as f64 / 1024.0
}

pub fn loadavg1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Clock ticks per second for `/proc/*/stat` times.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

struct ProcEntry {
    ppid: u32,
    comm: String,
    ticks: u64,
}

fn proc_table() -> HashMap<u32, ProcEntry> {
    let mut table = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return table;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if fields.len() < 13 {
            continue;
        }
        let ppid = fields[1].parse().unwrap_or(0);
        let ticks = fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
        table.insert(pid, ProcEntry { ppid, comm, ticks });
    }
    table
}

#[derive(Default)]
struct ForeignState {
    base: HashMap<u32, u64>,
    foreign_ticks: u64,
    since: Option<Instant>,
}

/// CPU used by processes that are not this harness, its ancestors and
/// children, kernel threads or PostgreSQL, sampled every half second: the
/// same rule as the peers' `benchlib.ForeignCpu`, so runs can be compared
/// and contaminated ones spotted.
pub struct ForeignCpu {
    state: Arc<Mutex<ForeignState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    clk: f64,
}

fn sample(state: &Mutex<ForeignState>, first: bool) {
    let table = proc_table();
    let me = std::process::id();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, entry) in &table {
        children.entry(entry.ppid).or_default().push(pid);
    }
    let mut mine = HashSet::new();
    let mut stack = vec![me];
    while let Some(pid) = stack.pop() {
        if mine.insert(pid) {
            stack.extend(children.get(&pid).into_iter().flatten().copied());
        }
    }
    let mut parent = table.get(&me).map(|e| e.ppid).unwrap_or(0);
    while parent > 1 {
        mine.insert(parent);
        parent = table.get(&parent).map(|e| e.ppid).unwrap_or(0);
    }
    let mut state = state.lock().expect("foreign cpu lock");
    for (&pid, entry) in &table {
        let ours = mine.contains(&pid)
            || entry.comm.starts_with("postgres")
            || entry.comm.starts_with("redis-server");
        let kernel = pid == 2 || entry.ppid == 2;
        if !(ours || kernel) {
            // A process born since the last sample used all its CPU inside the window.
            let previous =
                state
                    .base
                    .get(&pid)
                    .copied()
                    .unwrap_or(if first { entry.ticks } else { 0 });
            state.foreign_ticks += entry.ticks.saturating_sub(previous);
        }
        state.base.insert(pid, entry.ticks);
    }
}

impl ForeignCpu {
    pub fn start() -> ForeignCpu {
        let state = Arc::new(Mutex::new(ForeignState::default()));
        sample(&state, true);
        state.lock().expect("foreign cpu lock").since = Some(Instant::now());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(500));
                    sample(&state, false);
                }
            })
        };
        ForeignCpu {
            state,
            stop,
            thread: Some(thread),
            clk: clock_ticks(),
        }
    }

    /// Foreign CPU cores used on average since the last reset; then resets.
    pub fn take(&self) -> Option<f64> {
        sample(&self.state, false);
        let mut state = self.state.lock().expect("foreign cpu lock");
        let elapsed = state
            .since
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let cores =
            (elapsed > 0.0).then(|| round(state.foreign_ticks as f64 / self.clk / elapsed, 3));
        state.foreign_ticks = 0;
        state.since = Some(Instant::now());
        cores
    }
}

impl Drop for ForeignCpu {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_benchlib() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&s, 50.0), 2.5);
        assert_eq!(percentile(&s, 0.0), 1.0);
        assert_eq!(percentile(&s, 100.0), 4.0);
        assert!((percentile(&s, 99.0) - 3.97).abs() < 1e-9);
    }
}
