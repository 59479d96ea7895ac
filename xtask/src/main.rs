//! Project automation, the matklad xtask pattern: `cargo xtask <task>`.
//!
//! - `cargo xtask ci`: what `.ci/run` does (format check, clippy with warnings as errors, the
//!   test suite), stopping at the first failure.
//! - `cargo xtask kernels [--require-nvrtc]`: every CUDA kernel compiled with NVRTC, with
//!   registers and spills per kernel (see `kernels.rs`).
//! - `cargo xtask gpu-bundle`: the CUDA test binaries, the MNIST example, the CUDA benches,
//!   prebuilt kernels, MNIST and a `run.sh`, for a GPU host without Rust or network (see
//!   `gpu_bundle.rs`).
//! - `cargo xtask bench [FILTER] [--compare] [--rounds N] [--save NAME] [--baseline NAME]`: the criterion
//!   benches in one table with this machine's roofline and, with `--compare`, the `gemm` crate
//!   and PyTorch side by side (see `bench.rs`).

mod bench;
mod bench_runner;
mod gpu_bundle;
mod kernels;
mod roofline;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn run(what: &str, program: &str, args: &[&str]) -> Result<(), String> {
    println!("==> {what}: {program} {}", args.join(" "));
    let status =
        Command::new(program).args(args).status().map_err(|e| format!("{what}: cannot start {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn ci() -> Result<(), String> {
    run("format", "cargo", &["fmt", "--all", "--", "--check"])?;
    run("lint", "cargo", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    run("test", "cargo", &["test", "--workspace"])
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().cloned().unwrap_or_default();
    // xtask lives one level below the workspace root.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default();
    let result = match task.as_str() {
        "ci" => ci(),
        "bench" => bench::bench(&root, &args[1..]),
        "kernels" => kernels::kernels(&root, &args[1..]),
        "gpu-bundle" => gpu_bundle::gpu_bundle(&root),
        "roofline" => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            for t in [1, threads] {
                let r = roofline::measure(t);
                println!(
                    "{t} threads: copy {:.1} GB/s, f32 FMA peak {:.1} GFLOP/s ({})",
                    r.bandwidth_gbs, r.peak_gflops, r.isa
                );
            }
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\ntasks:\n  ci     format check, clippy -D warnings, cargo test --workspace\n  bench  criterion benches with roofline and peers\n  roofline  this machine's bandwidth and FMA peak, on 1 and all threads\n  kernels  compile kiln-cuda's kernels with NVRTC (compute_80, compute_90, sm_90); registers and spills [--require-nvrtc]\n  gpu-bundle  build target/gpu-bundle/kiln-gpu.tar.gz: CUDA tests, MNIST example, benches and run.sh for a GPU host\n\n{}",
                bench::USAGE
            );
            return if task.is_empty() || task == "help" || task == "--help" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
