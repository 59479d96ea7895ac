//! Runs kiln's criterion benches for `cargo xtask bench`, and with `--compare` its peers, one
//! case at a time: kiln, then the `gemm` crate, then PyTorch, before the next case starts.
//!
//! Why one case at a time: on a shared host the machine's state changes over minutes. In one
//! state the two vCPUs work like two cores, in another like one, and the MLP step of the same
//! binary takes 110 or 160 µs (BENCHMARKS.md, 2026-12-01). When every kiln case ran first and
//! PyTorch's ran a few minutes later, a ratio could divide a figure from one state by a figure
//! from the other. Run seconds apart, both sides of a ratio meet the same machine.
//!
//! The bench executables are run directly (built first by `cargo bench --no-run`), so that one
//! case costs a process start rather than a cargo invocation; PyTorch runs as one long-lived
//! `benches/peers/torch_bench.py --serve` process that times the case it is sent.
//!
//! Seconds apart is not always enough: the state can change between a case and its twin. With
//! `--rounds N` the case, its `gemm` twin and its PyTorch twin run N times in turn, and each side
//! keeps its lowest median (the copy beside a memory-bound case is the one from kiln's kept
//! round). Both sides get the same chances at the faster state, so neither is favoured.
//!
//! For the same reason a memory-bound case (criterion throughput in bytes) is followed by the
//! roofline's streaming copy: this host's copy bandwidth read 25.7-45.1 GB/s within one hour,
//! and a percentage of the run's best reading measured the moment as much as the kernel.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::SystemTime;

/// The prefix of the `gemm` crate's twin of a kiln matmul case (`peer-gemm/matmul/f32/...`).
pub const GEMM_PREFIX: &str = "peer-gemm/";

/// What was measured beside kiln's cases (kiln's own figures are criterion's files).
#[derive(Default)]
pub struct Beside {
    /// PyTorch's version, when it ran.
    pub torch_version: Option<String>,
    /// PyTorch's median time of each case it has.
    pub torch_ns: BTreeMap<String, f64>,
    /// The streaming copy's bandwidth (GB/s) measured right after each memory-bound case.
    pub copy_gbs: BTreeMap<String, f64>,
    /// The lowest median of each criterion case (kiln's and `gemm`'s) over the rounds.
    pub lowest_ns: BTreeMap<String, f64>,
}

/// Keeps the lower of `map[id]` and `ns`; true when `ns` is the new lowest.
fn keep_lowest(map: &mut BTreeMap<String, f64>, id: &str, ns: f64) -> bool {
    let lower = map.get(id).is_none_or(|&old| ns < old);
    if lower {
        map.insert(id.to_string(), ns);
    }
    lower
}

/// Builds the benches, runs every case whose id matches `filter` and, with `compare`, each
/// case's `gemm` and PyTorch twins right after it. Criterion writes kiln's and `gemm`'s figures
/// under `target/criterion`; PyTorch's, and the copy bandwidth beside memory-bound cases, come
/// back here.
pub fn run(root: &Path, filter: Option<&str>, compare: bool, threads: usize, rounds: usize) -> Result<Beside, String> {
    let exes = build(root)?;
    let mut torch = if compare {
        match TorchServer::start(root, threads) {
            Ok(s) => Some(s),
            Err(e) => {
                println!("    PyTorch comparison skipped: {e}");
                None
            }
        }
    } else {
        None
    };
    let mut beside = Beside { torch_version: torch.as_ref().map(|t| t.version.clone()), ..Beside::default() };
    for exe in &exes {
        let ids = list(exe, filter, compare)?;
        for id in ids.iter().filter(|id| !id.starts_with(GEMM_PREFIX)) {
            for round in 1..=rounds {
                if rounds > 1 {
                    println!("==> {id}: round {round} of {rounds}\n");
                }
                if let Some(row) = measure(root, exe, id, compare)? {
                    let lowest = keep_lowest(&mut beside.lowest_ns, id, row.median_ns);
                    if row.throughput.is_some_and(|(kind, _)| kind == "bytes") {
                        let gbs = crate::roofline::bandwidth(threads);
                        println!("{id:<40} streaming copy right after: {gbs:.1} GB/s\n");
                        if lowest {
                            beside.copy_gbs.insert(id.clone(), gbs);
                        }
                    }
                }
                let twin = format!("{GEMM_PREFIX}{id}");
                if ids.contains(&twin) {
                    if let Some(row) = measure(root, exe, &twin, compare)? {
                        keep_lowest(&mut beside.lowest_ns, &twin, row.median_ns);
                    }
                }
                if let Some(server) = torch.as_mut() {
                    if let Some(t) = server.time(id)? {
                        println!("{id:<40} PyTorch {:.1} us (same case, measured now)\n", t / 1e3);
                        keep_lowest(&mut beside.torch_ns, id, t);
                    }
                }
            }
        }
    }
    Ok(beside)
}

/// `cargo bench --no-run` for kiln-benches, returning the bench executables it built.
fn build(root: &Path) -> Result<Vec<PathBuf>, String> {
    println!("==> cargo bench -p kiln-benches --no-run");
    let out = Command::new("cargo")
        .current_dir(root)
        .args(["bench", "-p", "kiln-benches", "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo bench: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo bench --no-run failed ({})", out.status));
    }
    let exes: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["reason"] == "compiler-artifact"
                && v["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bench"))
        })
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .collect();
    if exes.is_empty() {
        return Err("cargo bench --no-run built no bench executables for kiln-benches".into());
    }
    Ok(exes)
}

/// A bench executable, told whether to register the peer (`gemm`) cases.
fn bench_exe(exe: &Path, peers: bool) -> Command {
    let mut cmd = Command::new(exe);
    if peers {
        cmd.env("KILN_BENCH_PEERS", "1");
    }
    cmd
}

/// The ids of the cases in `exe` that match `filter` (criterion's `--list`).
fn list(exe: &Path, filter: Option<&str>, peers: bool) -> Result<Vec<String>, String> {
    let mut cmd = bench_exe(exe, peers);
    cmd.args(["--bench", "--list"]);
    cmd.args(filter);
    let out = cmd.output().map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --list failed ({}): {}",
            exe.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": benchmark"))
        .map(str::to_string)
        .collect())
}

/// Runs one bench executable with criterion's arguments, its output going to the terminal.
/// Runs the one criterion case `id` and reads back its row (`None` if criterion wrote none).
fn measure(root: &Path, exe: &Path, id: &str, peers: bool) -> Result<Option<crate::bench::Row>, String> {
    let started = SystemTime::now();
    criterion(exe, &["--bench".into(), "--exact".into(), id.to_string()], peers)?;
    let rows = crate::bench::criterion_rows(&root.join("target/criterion"), started)?;
    Ok(rows.into_iter().find(|r| r.id == id))
}

fn criterion(exe: &Path, args: &[String], peers: bool) -> Result<(), String> {
    let status = bench_exe(exe, peers).args(args).status().map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} {} failed ({status})", exe.display(), args.join(" ")))
    }
}

/// `torch_bench.py --serve`: reads a case id per line, answers with one JSON line.
struct TorchServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    version: String,
}

impl TorchServer {
    fn start(root: &Path, threads: usize) -> Result<Self, String> {
        let probe = Command::new("python3").args(["-c", "import torch"]).output();
        if !probe.is_ok_and(|o| o.status.success()) {
            return Err("`python3 -c 'import torch'` failed (pip install torch numpy)".into());
        }
        println!("==> python3 benches/peers/torch_bench.py --serve ({threads} threads)");
        let mut child = Command::new("python3")
            .current_dir(root)
            .args(["benches/peers/torch_bench.py", "--serve", "--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("torch_bench.py: no pipes to the child process".into());
        };
        let mut server = TorchServer { child, stdin, stdout: BufReader::new(stdout), version: String::new() };
        let hello = server.read()?;
        server.version = hello["torch"].as_str().unwrap_or("?").to_string();
        Ok(server)
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).map_err(|e| format!("torch_bench.py: cannot read its answer: {e}"))?;
        if n == 0 {
            return Err("torch_bench.py exited early (its error is printed above)".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("torch_bench.py answered {line:?}, not JSON: {e}"))
    }

    /// PyTorch's median time for `id`, or None when it has no such case.
    fn time(&mut self, id: &str) -> Result<Option<f64>, String> {
        writeln!(self.stdin, "{id}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("torch_bench.py: cannot send {id:?}: {e}"))?;
        Ok(self.read()?["median_ns"].as_f64())
    }
}

impl Drop for TorchServer {
    fn drop(&mut self) {
        // It may be timing a case when an error ends the run; wait so it does not outlive it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
