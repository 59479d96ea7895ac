//! `cargo xtask kernels [--require-nvrtc]`: compiles every kernel file of kiln-cuda with NVRTC
//! for compute_80 and compute_90 (PTX) and sm_90 (CUBIN), checks that every kernel the backend
//! names is in the code with the parameters the backend passes, and reports registers, shared memory and spills per kernel (the table
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

/// The byte size of each parameter of the PTX entry `name`, or `None` if there is no such entry.
fn ptx_params(ptx: &str, name: &str) -> Option<Vec<usize>> {
    let start = ptx.find(&format!(".entry {name}("))?;
    let body = &ptx[start..];
    let body = &body[..body.find(')')?];
    let size = |param: &str| -> usize {
        if let Some(open) = param.find('[') {
            return param[open + 1..].split(']').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
        let ty = param.split_whitespace().nth(1).unwrap_or_default();
        match ty.trim_start_matches(['.', 'u', 's', 'b', 'f']) {
            "64" => 8,
            "32" => 4,
            "16" => 2,
            "8" => 1,
            _ => 0,
        }
    };
    Some(body.lines().filter(|l| l.trim_start().starts_with(".param")).map(|l| size(l.trim())).collect())
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
    let prebuilt = root.join("target/kernels/prebuilt");
    let mut checked = 0;
    for file in kernels::FILES {
        let program = file.program();
        let wanted: Vec<&kernels::Kernel> = expected.iter().filter(|k| k.file == file.name).collect();
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
                    if !report.iter().any(|u| u.kernel == k.name) {
                        problems.push(format!("{}: kernel {} missing from the {arch} code", file.name, k.name));
                    }
                }
                usages.extend(report);
                // The CUBINs a GPU host without NVRTC loads (the GPU bundle ships them).
                let name = kiln_cuda::cache::prebuilt_name(&program, file.name, arch);
                std::fs::create_dir_all(&prebuilt).map_err(|e| format!("{}: {e}", prebuilt.display()))?;
                std::fs::write(prebuilt.join(&name), &compiled.code).map_err(|e| format!("{name}: {e}"))?;
            } else {
                let ptx = String::from_utf8_lossy(&compiled.code);
                for k in &wanted {
                    match ptx_params(&ptx, &k.name) {
                        None => problems.push(format!("{}: kernel {} missing from the {arch} PTX", file.name, k.name)),
                        Some(sizes) if sizes != k.params => problems.push(format!(
                            "{}: kernel {} takes parameters of {sizes:?} bytes in the {arch} PTX, but kiln-cuda passes {:?}",
                            file.name, k.name, k.params
                        )),
                        Some(_) => checked += 1,
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
        "\n{} kernels, up to {max_regs} registers, {} with spills; {checked} PTX signatures match the launches",
        usages.len(),
        usages.iter().filter(|u| u.spill_stores + u.spill_loads > 0).count()
    );
    println!("sm_90 CUBINs for hosts without NVRTC: {}", prebuilt.display());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("kernel check failed:\n{}", problems.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ptx_parameter_sizes() {
        let ptx = ".visible .entry fill_f16(\n\t.param .u64 .ptr .align 1 fill_f16_param_0,\n\t.param .align 2 .b8 fill_f16_param_1[2],\n\t.param .u64 fill_f16_param_2\n)\n{\n}\n.visible .entry gather_u8_u32(\n\t.param .u32 g_param_4,\n\t.param .align 8 .b8 g_param_1[144],\n\t.param .u8 g_param_9\n)";
        assert_eq!(super::ptx_params(ptx, "fill_f16"), Some(vec![8, 2, 8]));
        assert_eq!(super::ptx_params(ptx, "gather_u8_u32"), Some(vec![4, 144, 1]));
        assert_eq!(super::ptx_params(ptx, "fill_f32"), None);
    }
}
