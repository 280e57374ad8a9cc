//! Criterion benchmarks and the load generator (see `benches/`).
