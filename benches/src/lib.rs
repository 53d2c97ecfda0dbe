//! Helpers shared by the benchmarks and the bench-compare experiment.
