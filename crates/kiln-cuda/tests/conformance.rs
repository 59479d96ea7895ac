//! The whole conformance suite on `cuda:0` when a CUDA device is present; elsewhere every test
//! prints "skipped: no CUDA device" and passes. Partial mode: the backend declines `scatter_add`
//! on `u8` (CUDA has no atomic add on bytes) with `UnsupportedDType`, which the suite reports.

kiln_conformance::suite!(optional partial "CUDA": match kiln_cuda::device(0) {
    Ok(dev) => Some(dev),
    Err(e) => {
        println!("({e})");
        None
    }
});
