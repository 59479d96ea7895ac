//! The whole backend conformance suite, every dtype, on the `vec` backend.

kiln_conformance::suite!(custom_backend::vec_device());
