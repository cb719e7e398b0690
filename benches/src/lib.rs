//! Cairn's benchmarks and measurement tools: criterion benches of the pipeline stages
//! (`benches/`), and `chunk-sizes`, which measures how chunker parameters trade chunk count
//! against deduplication on a real dataset (see docs/benchmarks.md).
