//! The portable (non-SIMD) kernel paths against the oracle: `KILN_NO_SIMD` is set before the
//! first kernel call of this test binary, so the GEMM dispatch picks the portable code, which
//! the machines CI runs on would otherwise never exercise.

#[test]
fn portable_gemm_matches_the_oracle() {
    // Safe in edition 2021; this binary has this one test, so nothing reads the environment
    // concurrently.
    std::env::set_var("KILN_NO_SIMD", "1");
    let seed = kiln_conformance::seed();
    for (name, family) in
        kiln_conformance::FAMILIES.iter().filter(|(n, _)| matches!(*n, "matmul" | "grads" | "composite"))
    {
        let report = kiln_conformance::run_family(*family, kiln_cpu::cpu(), seed);
        println!("{name}: {} cases, {} gradient checks (portable kernels)", report.passed, report.grad_checks);
        assert!(report.failures.is_empty(), "replay with KILN_SEED={seed}:\n{}", report.failures.join("\n"));
        assert!(report.passed + report.grad_checks > 0);
    }
}
