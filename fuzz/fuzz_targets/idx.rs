//! The IDX parser, raw or gzip: any bytes give Ok or Err, never a panic, and an Ok result is
//! consistent with its header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(bytes) = kiln_data::idx::gunzip_if_needed(data.to_vec(), "fuzz input") else { return };
    if let Ok(idx) = kiln_data::idx::parse(&bytes, Path::new("fuzz.idx")) {
        assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>(), "dims {:?}", idx.dims);
    }
});
