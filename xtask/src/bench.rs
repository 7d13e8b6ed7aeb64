//! `bench [--smoke] [batch-bench options]`: batch-tokio against its peers.
//!
//! Builds and runs the `batch-bench` binary (`bench/`) with `--release --locked`. The full run
//! writes `docs/bench/results.md` (machine, settings, a summary per bound, every case's row with
//! latency and peak RSS) and `docs/bench/throughput.png`; on a quiet 2-core machine it takes
//! about 4–6 minutes (2 bounds × 12 configurations × 11 implementations × 7 runs, then one
//! child process per case for its peak RSS). `--smoke` runs every implementation at both bounds
//! on a tiny workload once, which checks every delivered count, checksum and latency sample and
//! that the report and chart render, into a temporary directory that is removed afterwards:
//! nothing in `docs/` changes. It takes a few seconds; CI runs it. No timing is asserted
//! anywhere.
//!
//! Other arguments (`--runs R`, `--n N`, `--n-wide N`, `--no-rss`) go to `batch-bench` as they
//! are. So do its case filters (`--impls a,b`, `--bound 4b|8192`, `--item u64|64B`,
//! `--producers P`, `--batch B`), for a targeted comparison such as
//! `cargo xtask bench --impls batch-tokio-add,kanal --item u64 --bound 4b --batch 16 --no-rss`:
//! a filtered run prints its report and writes it into a temporary directory, removed
//! afterwards, so that the full run's `docs/bench/` files are never replaced by a partial one.

use std::path::Path;

use crate::util::{Result, cargo, root, run};

/// Where the full run writes, relative to the workspace root.
const OUT: &str = "docs/bench";

/// `batch-bench`'s case filters: a run with any of them measures only some cases.
const FILTERS: [&str; 5] = ["--impls", "--bound", "--item", "--producers", "--batch"];

/// Runs the benchmark (`args` as after `cargo xtask bench`).
pub(crate) fn bench(args: &[String]) -> Result {
    let root = root();
    let smoke = args.iter().any(|a| a == "--smoke");
    if let Some(out) = args.iter().position(|a| a == "--out") {
        return Err(format!("`{}`: the output directory is chosen by xtask", args[out]));
    }
    if !smoke && args.iter().any(|a| FILTERS.contains(&a.as_str())) {
        let dir = std::env::temp_dir().join(format!("batch-bench-some-{}", std::process::id()));
        let result = batch_bench(&root, args, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        result?;
        eprintln!("xtask: a filtered run: the report is above; {OUT} is left as it was");
        return Ok(());
    }
    if smoke {
        let dir = std::env::temp_dir().join(format!("batch-bench-smoke-{}", std::process::id()));
        let result = batch_bench(&root, args, &dir).and_then(|()| check_outputs(&dir));
        let _ = std::fs::remove_dir_all(&dir);
        result?;
        eprintln!(
            "xtask: bench smoke passed (every implementation delivered every item at both bounds; report and chart rendered)"
        );
        Ok(())
    } else {
        let dir = root.join(OUT);
        batch_bench(&root, args, &dir)?;
        check_outputs(&dir)?;
        eprintln!("xtask: wrote {OUT}/results.md and {OUT}/throughput.png");
        Ok(())
    }
}

/// `cargo run --release --locked -p batch-bench -- ARGS --out DIR`.
fn batch_bench(root: &Path, args: &[String], out: &Path) -> Result {
    run(cargo(root)
        .args(["run", "--release", "--locked", "-p", "batch-bench", "--bin", "batch-bench", "--"])
        .args(args)
        .arg("--out")
        .arg(out))
}

/// The section headings `results.md` must have: a summary and full tables for each bound.
const SECTIONS: [&str; 6] = [
    "### Bound 4×B",
    "### Bound 8192",
    "## Every case: bound 4×B, u64",
    "## Every case: bound 4×B, 64B",
    "## Every case: bound 8192, u64",
    "## Every case: bound 8192, 64B",
];

/// Fails unless `dir` holds a `results.md` with a summary and a results table for each bound, and
/// a PNG `throughput.png`.
fn check_outputs(dir: &Path) -> Result {
    let results = dir.join("results.md");
    let md = std::fs::read_to_string(&results).map_err(|e| format!("reading {}: {e}", results.display()))?;
    if !md.contains("| P | B | implementation |") {
        return Err(format!("{} has no results table", results.display()));
    }
    if let Some(missing) = SECTIONS.iter().find(|s| !md.contains(*s)) {
        return Err(format!("{} has no section `{missing}`", results.display()));
    }
    let png = dir.join("throughput.png");
    let bytes = std::fs::read(&png).map_err(|e| format!("reading {}: {e}", png.display()))?;
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(format!("{} is not a PNG", png.display()));
    }
    Ok(())
}
