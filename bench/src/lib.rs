//! Benchmarks and load generators (see bench/README.md).
