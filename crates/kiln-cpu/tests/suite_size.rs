//! The whole suite against the CPU backend in one run, checking its size: at least 300 cases and
//! a gradient check for every differentiable op, none declined, none failed.

#[test]
fn cpu_passes_the_whole_suite_and_the_suite_is_large() {
    let seed = kiln_conformance::seed();
    let report = kiln_conformance::run_all(kiln_cpu::cpu(), seed);
    println!(
        "{} cases, {} gradient checks, {} unsupported, {} failed (seed {seed})",
        report.passed,
        report.grad_checks,
        report.unsupported.len(),
        report.failures.len()
    );
    assert!(report.failures.is_empty(), "replay with KILN_SEED={seed}:\n{}", report.failures.join("\n"));
    assert!(report.unsupported.is_empty(), "{:?}", report.unsupported);
    assert!(report.passed >= 300, "only {} cases", report.passed);
    assert!(report.grad_checks >= 80, "only {} gradient checks", report.grad_checks);
}
