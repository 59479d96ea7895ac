//! `cargo xtask kernels [--require-nvrtc]`: compiles every kernel file of kiln-cuda with NVRTC
//! for compute_80 and compute_90 (PTX) and sm_90 (CUBIN), checks that every kernel the backend
//! names is in the code, and reports registers, shared memory and spills per kernel (the table
//! goes to `target/kernels/report.md`). It fails on a compile error, a missing kernel or a
//! spill. Without NVRTC it prints "skipped", unless `--require-nvrtc` (CI) makes that a failure.

use kiln_cuda::{kernels, nvrtc};
use std::path::Path;

const TARGETS: [&str; 3] = ["compute_80", "compute_90", "sm_90"];

/// ptxas's report for one kernel.
#[derive(Default)]
struct Usage {
    kernel: String,
    registers: u32,
    shared: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// The number just before `unit` in `line` ("12 registers", "0 bytes spill stores").
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let head = &line[..line.find(unit)?];
    head.split(|c: char| !c.is_ascii_digit()).rfind(|s| !s.is_empty())?.parse().ok()
}

/// Per-kernel usage from an `-Xptxas=-v` log.
fn parse_log(log: &str) -> Vec<Usage> {
    let mut out: Vec<Usage> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let kernel = rest.split('\'').next().unwrap_or_default().to_string();
            out.push(Usage { kernel, ..Usage::default() });
        } else if let Some(u) = out.last_mut() {
            if line.contains("spill stores") {
                u.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                u.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            }
            if line.contains("Used") && line.contains("registers") {
                u.registers = number_before(line, "registers").unwrap_or(0);
                u.shared = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

pub fn kernels(root: &Path, args: &[String]) -> Result<(), String> {
    let require = args.iter().any(|a| a == "--require-nvrtc");
    let found = match nvrtc::load() {
        Ok(n) => n,
        Err(e) if !require => {
            println!("skipped: {e}");
            return Ok(());
        }
        Err(e) => return Err(e.to_string()),
    };
    println!(
        "NVRTC {}.{} from {} (headers: {})",
        found.version.0,
        found.version.1,
        found.library.display(),
        found.include_dir.as_ref().map_or("none found".into(), |d| d.display().to_string())
    );
    let expected = kernels::expected();
    let (mut usages, mut problems) = (Vec::new(), Vec::new());
    for file in kernels::FILES {
        let program = file.program();
        let wanted: Vec<&String> = expected.iter().filter(|(f, _)| *f == file.name).map(|(_, k)| k).collect();
        for arch in TARGETS {
            let compiled = match nvrtc::compile(&program, file.name, arch) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            if arch.starts_with("sm_") {
                let report = parse_log(&compiled.log);
                for k in &wanted {
                    if !report.iter().any(|u| &&u.kernel == k) {
                        problems.push(format!("{}: kernel {k} missing from the {arch} code", file.name));
                    }
                }
                usages.extend(report);
            } else {
                let ptx = String::from_utf8_lossy(&compiled.code);
                for k in &wanted {
                    if !ptx.contains(&format!(".entry {k}(")) {
                        problems.push(format!("{}: kernel {k} missing from the {arch} PTX", file.name));
                    }
                }
            }
            println!("  {:<10} {:<10} {:>8} bytes, {} kernels", file.name, arch, compiled.code.len(), wanted.len());
        }
    }
    usages.sort_by(|a, b| b.registers.cmp(&a.registers).then(a.kernel.cmp(&b.kernel)));
    let mut table = String::from(
        "| kernel (sm_90) | registers | shared bytes | spill stores | spill loads |\n|---|---|---|---|---|\n",
    );
    for u in &usages {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            u.kernel, u.registers, u.shared, u.spill_stores, u.spill_loads
        ));
        if u.spill_stores + u.spill_loads > 0 {
            problems.push(format!("{} spills ({} bytes stored, {} loaded)", u.kernel, u.spill_stores, u.spill_loads));
        }
    }
    let dir = root.join("target/kernels");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(dir.join("report.md"), &table).map_err(|e| format!("{}: {e}", dir.display()))?;
    let max_regs = usages.iter().map(|u| u.registers).max().unwrap_or(0);
    println!(
        "\nthe {} most register-hungry kernels of {} (all in target/kernels/report.md):",
        8.min(usages.len()),
        usages.len()
    );
    for line in table.lines().take(10) {
        println!("{line}");
    }
    println!(
        "\n{} kernels, up to {max_regs} registers, {} with spills",
        usages.len(),
        usages.iter().filter(|u| u.spill_stores + u.spill_loads > 0).count()
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("kernel check failed:\n{}", problems.join("\n")))
    }
}
