//! The invariants the fuzz targets check, and their seed inputs; both are
//! shared with the stable replay of the corpora (tests/fuzz_corpus.rs).

pub mod checks;
pub mod seeds;
