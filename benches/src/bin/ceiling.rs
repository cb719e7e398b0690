//! The pipeline's ceiling, from the criterion medians of `cargo bench -p cairn-benches`: each
//! stage's throughput (bytes of input per second on one core), the one-core ceiling (the
//! harmonic sum: the speed of running every stage one after another on one core), the
//! all-cores ceiling (that, times the cores), and the measured pipelines against them.
//!
//! Usage: `cargo bench -p cairn-benches --bench pipeline && cargo run --release -p cairn-benches --bin ceiling [CRITERION_DIR]`

use std::path::{Path, PathBuf};

/// The benchmarks' input size (as in `benches/pipeline.rs`).
const LEN: f64 = (32 << 20) as f64;

const STAGES: [&str; 5] = ["chunk", "hash", "compress", "seal", "pack"];

/// The median time per iteration of `stage/NAME`, in seconds.
fn median(dir: &Path, name: &str) -> Result<f64, String> {
    let path = dir.join("stage").join(name).join("new/estimates.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e}; run `cargo bench -p cairn-benches --bench pipeline` first",
            path.display()
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    v["median"]["point_estimate"]
        .as_f64()
        .map(|ns| ns / 1e9)
        .ok_or_else(|| format!("{}: no median.point_estimate", path.display()))
}

fn mbs(secs: f64) -> f64 {
    LEN / secs / 1e6
}

fn run(dir: &Path) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("| stage | MB/s on one core |\n|---|---|");
    let mut total = 0.0;
    for s in STAGES {
        let t = median(dir, s)?;
        total += t;
        println!("| {s} | {:.0} |", mbs(t));
    }
    let one = mbs(total);
    let all = one * cores as f64;
    let p1 = mbs(median(dir, "pipeline-1-thread")?);
    let pn = mbs(median(dir, &format!("pipeline-{cores}-cores"))?);
    let pi = mbs(median(dir, &format!("pipeline-{cores}-independent"))?);
    println!();
    println!("| | MB/s | of the one-core ceiling | of the {cores}-core ceiling |");
    println!("|---|---|---|---|");
    println!("| ceiling, one core (harmonic sum) | {one:.0} | 100% | |");
    println!("| ceiling, {cores} cores | {all:.0} | | 100% |");
    println!(
        "| pipeline, one thread | {p1:.0} | {:.0}% | |",
        100.0 * p1 / one
    );
    println!(
        "| pipeline, agent layout on {cores} cores | {pn:.0} | {:.2}× | {:.0}% |",
        pn / one,
        100.0 * pn / all
    );
    println!(
        "| {cores} independent one-thread pipelines (the machine's scaling) | {pi:.0} | {:.2}× | {:.0}% |",
        pi / one,
        100.0 * pi / all
    );
    Ok(())
}

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/criterion"));
    if let Err(e) = run(&dir) {
        eprintln!("ceiling: {e}");
        std::process::exit(1);
    }
}
