//! The CPU backend against the whole conformance suite.

kiln_conformance::suite!(kiln_cpu::cpu());
