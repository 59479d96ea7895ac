//! `cargo xtask bench`: runs kiln's criterion benches (and, with `--compare`, the same cases
//! through the `gemm` crate and PyTorch, each right after kiln's: see `bench_runner.rs`),
//! measures this machine's roofline, and prints one table: median time, throughput, share of
//! the roofline, and speedups.
//!
//! ```text
//! cargo xtask bench [FILTER] [--compare] [--save NAME] [--baseline NAME]
//! ```
//!
//! Writes `target/bench/report.md` and `target/bench/report.json`; `--save NAME` keeps the run
//! as `target/bench/baselines/NAME.json`, which `--baseline NAME` compares against later.

use crate::bench_runner::{self, GEMM_PREFIX};
use crate::roofline::{self, Roofline};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

struct Opts {
    filter: Option<String>,
    compare: bool,
    save: Option<String>,
    baseline: Option<String>,
    rounds: usize,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts { filter: None, compare: false, save: None, baseline: None, rounds: 1 };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--compare" => o.compare = true,
            "--save" => o.save = Some(it.next().ok_or("--save needs a NAME")?.clone()),
            "--baseline" => o.baseline = Some(it.next().ok_or("--baseline needs a NAME")?.clone()),
            "--rounds" => {
                let n = it.next().ok_or("--rounds needs a number")?;
                o.rounds =
                    n.parse().ok().filter(|&n| n > 0).ok_or(format!("--rounds needs a number above 0, got {n:?}"))?;
            }
            f if !f.starts_with('-') && o.filter.is_none() => o.filter = Some(f.to_string()),
            other => return Err(format!("bench: unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok(o)
}

/// The usage line of `cargo xtask bench`.
pub const USAGE: &str = "usage: cargo xtask bench [FILTER] [--compare] [--rounds N] [--save NAME] [--baseline NAME]
  FILTER           a regular expression over bench ids (matmul/f32/1024x1024x1024, train/...)
  --compare        also run each case through the gemm crate and PyTorch (if importable),
                   right after kiln's, so both sides of a ratio meet the same machine state
  --rounds N       measure each case (and its peers) N times in turn and keep each side's
                   lowest median: on a host that changes state within seconds, one pair can
                   still straddle a change (default 1)
  --save NAME      keep this run as target/bench/baselines/NAME.json
  --baseline NAME  add a column comparing with a saved run";

/// One measured case.
pub struct Row {
    /// Criterion's full id, `group/case`.
    pub id: String,
    /// Median time of one iteration.
    pub median_ns: f64,
    /// ("flops" | "bytes" | "items", amount per iteration).
    pub throughput: Option<(&'static str, f64)>,
}

pub fn bench(root: &Path, args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("==> measuring this machine's roofline on {threads} threads");
    let roof = roofline::measure(threads);
    println!(
        "    streaming copy {:.1} GB/s, f32 FMA peak {:.1} GFLOP/s ({})",
        roof.bandwidth_gbs, roof.peak_gflops, roof.isa
    );

    let started = SystemTime::now();
    let beside = bench_runner::run(root, o.filter.as_deref(), o.compare, threads, o.rounds)?;
    let mut rows = criterion_rows(&root.join("target/criterion"), started)?;
    // With several rounds criterion's files hold the last round; each side keeps its lowest.
    for r in &mut rows {
        if let Some(&best) = beside.lowest_ns.get(&r.id) {
            r.median_ns = best;
        }
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    let (gemm, kiln): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|r| r.id.starts_with(GEMM_PREFIX));
    let gemm: BTreeMap<String, f64> =
        gemm.into_iter().map(|r| (r.id.trim_start_matches(GEMM_PREFIX).to_string(), r.median_ns)).collect();

    // Probed again after the benches, keeping the higher reading of each probe: a roofline is
    // an upper bound, and on a shared host one probe can read low for seconds at a time (three
    // runs here read 117-212 GFLOP/s before benches that themselves reached 191).
    println!("==> measuring the roofline again");
    let again = roofline::measure(threads);
    println!(
        "    streaming copy {:.1} GB/s, f32 FMA peak {:.1} GFLOP/s; keeping the highest readings",
        again.bandwidth_gbs, again.peak_gflops
    );
    let mut roof = roof.max(again);
    // The copies beside memory-bound cases are readings of the same probe.
    roof.bandwidth_gbs = beside.copy_gbs.values().copied().fold(roof.bandwidth_gbs, f64::max);
    let baseline = match &o.baseline {
        Some(name) => Some(load_baseline(&out_dir, name)?),
        None => None,
    };

    let report = Report {
        roof,
        kiln: &kiln,
        torch: &beside.torch_ns,
        torch_version: beside.torch_version,
        copy_gbs: &beside.copy_gbs,
        gemm: &gemm,
        baseline: baseline.as_ref(),
        rounds: o.rounds,
    };
    let md = report.markdown();
    println!("\n{md}");
    let json = report.json();
    write_atomic(&out_dir.join("report.md"), md.as_bytes())?;
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    write_atomic(&out_dir.join("report.json"), text.as_bytes())?;
    println!("wrote {} and report.json", out_dir.join("report.md").display());
    if let Some(name) = &o.save {
        let dir = out_dir.join("baselines");
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        write_atomic(&dir.join(format!("{name}.json")), text.as_bytes())?;
        println!("saved as baseline {name:?}");
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))
}

/// Every criterion result written since `since`.
pub fn criterion_rows(dir: &Path, since: SystemTime) -> Result<Vec<Row>, String> {
    let mut files = Vec::new();
    find(dir, "benchmark.json", &mut files);
    let mut rows = Vec::new();
    for bench_file in files {
        if !bench_file.parent().is_some_and(|p| p.ends_with("new")) {
            continue;
        }
        let fresh = std::fs::metadata(&bench_file).and_then(|m| m.modified()).is_ok_and(|t| t >= since);
        if !fresh {
            continue;
        }
        let meta = read_json(&bench_file)?;
        let estimates = read_json(&bench_file.with_file_name("estimates.json"))?;
        let id = meta["full_id"].as_str().unwrap_or_default().to_string();
        let median_ns = estimates["median"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
        let group = id.split('/').next().unwrap_or_default();
        let items = matches!(group, "train" | "infer");
        let throughput = match &meta["throughput"] {
            Value::Object(t) => t.iter().next().and_then(|(kind, v)| {
                let amount = v.as_f64()?;
                Some((
                    if kind == "Bytes" {
                        "bytes"
                    } else if items {
                        "items"
                    } else {
                        "flops"
                    },
                    amount,
                ))
            }),
            _ => None,
        };
        rows.push(Row { id, median_ns, throughput });
    }
    Ok(rows)
}

fn find(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            find(&p, name, out);
        } else if p.file_name().is_some_and(|n| n == name) {
            out.push(p);
        }
    }
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))
}

fn load_baseline(out_dir: &Path, name: &str) -> Result<BTreeMap<String, f64>, String> {
    let path = out_dir.join("baselines").join(format!("{name}.json"));
    let v = read_json(&path).map_err(|e| format!("{e} (save one first with --save {name})"))?;
    Ok(v["benches"]
        .as_array()
        .map(|a| a.iter().filter_map(|b| Some((b["id"].as_str()?.to_string(), b["median_ns"].as_f64()?))).collect())
        .unwrap_or_default())
}

struct Report<'a> {
    roof: Roofline,
    kiln: &'a [Row],
    torch: &'a BTreeMap<String, f64>,
    torch_version: Option<String>,
    gemm: &'a BTreeMap<String, f64>,
    /// The streaming copy measured right after each memory-bound case.
    copy_gbs: &'a BTreeMap<String, f64>,
    baseline: Option<&'a BTreeMap<String, f64>>,
    /// Rounds each case was measured in (each side's lowest median kept).
    rounds: usize,
}

fn time(ns: f64) -> String {
    match ns {
        t if t >= 1e9 => format!("{:.2} s", t / 1e9),
        t if t >= 1e6 => format!("{:.2} ms", t / 1e6),
        t if t >= 1e3 => format!("{:.1} us", t / 1e3),
        t => format!("{t:.0} ns"),
    }
}

impl Report<'_> {
    /// (throughput text, percent of roofline) of a row. A memory-bound row is measured against
    /// the copy that ran right after it, when there is one.
    fn rate(&self, r: &Row) -> (String, Option<f64>) {
        let Some((kind, amount)) = r.throughput else { return (String::new(), None) };
        let per_s = amount / (r.median_ns * 1e-9);
        match kind {
            "flops" => (format!("{:.1} GFLOP/s", per_s / 1e9), Some(100.0 * per_s / 1e9 / self.roof.peak_gflops)),
            "bytes" => {
                let copy = self.copy_gbs.get(&r.id).copied().unwrap_or(self.roof.bandwidth_gbs);
                (format!("{:.1} GB/s", per_s / 1e9), Some(100.0 * per_s / 1e9 / copy))
            }
            _ => (format!("{:.0} items/s", per_s), None),
        }
    }

    /// A memory-bound row's percent of the run's highest copy reading (the roofline line).
    fn of_run_max(&self, r: &Row) -> Option<f64> {
        match r.throughput {
            Some(("bytes", amount)) => Some(100.0 * amount / (r.median_ns * 1e-9) / 1e9 / self.roof.bandwidth_gbs),
            _ => None,
        }
    }

    fn markdown(&self) -> String {
        let mut s = format!(
            "Roofline ({} threads): streaming copy {:.1} GB/s, f32 FMA peak {:.1} GFLOP/s ({}).{}\n\n",
            self.roof.threads,
            self.roof.bandwidth_gbs,
            self.roof.peak_gflops,
            self.roof.isa,
            self.torch_version.as_ref().map(|v| format!(" PyTorch {v}.")).unwrap_or_default()
        );
        if let (Some(lo), Some(hi)) =
            (self.copy_gbs.values().copied().reduce(f64::min), self.copy_gbs.values().copied().reduce(f64::max))
        {
            s += &format!(
                "Memory-bound rows (GB/s) are a percent of the streaming copy measured right after each \
                 ({lo:.1}-{hi:.1} GB/s in this run); the JSON also has the percent of the highest reading.\n"
            );
        }
        s += "Speedups are peer time / kiln time: above 1 means kiln is faster.\n";
        if self.rounds > 1 {
            s += &format!(
                "Each case and its peers ran {} times in turn; each side's lowest median is shown.\n",
                self.rounds
            );
        }
        s += "\n";
        s += "| bench | median | throughput | roofline | vs PyTorch | vs gemm crate |";
        if self.baseline.is_some() {
            s += " vs baseline |";
        }
        s += "\n|---|---:|---:|---:|---:|---:|";
        if self.baseline.is_some() {
            s += "---:|";
        }
        s += "\n";
        let ratio = |peer: Option<&f64>, r: &Row| peer.map(|p| format!("{:.2}x", p / r.median_ns)).unwrap_or_default();
        for r in self.kiln {
            let (rate, roof) = self.rate(r);
            let roof = roof.map(|p| format!("{p:.0}%")).unwrap_or_default();
            s += &format!(
                "| {} | {} | {} | {} | {} | {} |",
                r.id,
                time(r.median_ns),
                rate,
                roof,
                ratio(self.torch.get(&r.id), r),
                ratio(self.gemm.get(&r.id), r)
            );
            if let Some(b) = self.baseline {
                s += &format!(" {} |", ratio(b.get(&r.id), r));
            }
            s += "\n";
        }
        s
    }

    fn json(&self) -> Value {
        let benches: Vec<Value> = self
            .kiln
            .iter()
            .map(|r| {
                let (rate, roof) = self.rate(r);
                json!({
                    "id": r.id,
                    "median_ns": r.median_ns,
                    "throughput": rate,
                    "roofline_percent": roof,
                    "copy_gbs_after": self.copy_gbs.get(&r.id),
                    "roofline_percent_of_run_max": self.of_run_max(r),
                    "torch_median_ns": self.torch.get(&r.id),
                    "gemm_median_ns": self.gemm.get(&r.id),
                })
            })
            .collect();
        json!({
            "roofline": {
                "threads": self.roof.threads,
                "bandwidth_gbs": self.roof.bandwidth_gbs,
                "peak_gflops": self.roof.peak_gflops,
                "isa": self.roof.isa,
            },
            "torch": self.torch_version,
            "rounds": self.rounds,
            "benches": benches,
        })
    }
}
