//! `bench [--smoke] [batch-bench options]`: batch-tokio against its peers.
//!
//! Builds and runs the `batch-bench` binary (`bench/`) with `--release --locked`. The full run
//! writes `docs/bench/results.md` (machine, settings, every case's row) and
//! `docs/bench/throughput.png`; it takes a few minutes. `--smoke` runs every implementation on
//! a tiny workload once, which checks every delivered count and checksum and that the report and
//! chart render, into a temporary directory that is removed afterwards: nothing in `docs/`
//! changes. CI runs the smoke version. No timing is asserted anywhere.
//!
//! Other arguments (`--runs R`, `--n N`, `--n-wide N`, `--no-rss`) go to `batch-bench` as they
//! are.

use std::path::Path;

use crate::util::{Result, cargo, root, run};

/// Where the full run writes, relative to the workspace root.
const OUT: &str = "docs/bench";

/// Runs the benchmark (`args` as after `cargo xtask bench`).
pub(crate) fn bench(args: &[String]) -> Result {
    let root = root();
    let smoke = args.iter().any(|a| a == "--smoke");
    if let Some(out) = args.iter().position(|a| a == "--out") {
        return Err(format!("`{}`: the output directory is chosen by xtask", args[out]));
    }
    if smoke {
        let dir = std::env::temp_dir().join(format!("batch-bench-smoke-{}", std::process::id()));
        let result = batch_bench(&root, args, &dir).and_then(|()| check_outputs(&dir));
        let _ = std::fs::remove_dir_all(&dir);
        result?;
        eprintln!(
            "xtask: bench smoke passed (every implementation delivered every item; report and chart rendered)"
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

/// Fails unless `dir` holds a non-empty `results.md` and a PNG `throughput.png`.
fn check_outputs(dir: &Path) -> Result {
    let results = dir.join("results.md");
    let md = std::fs::read_to_string(&results).map_err(|e| format!("reading {}: {e}", results.display()))?;
    if !md.contains("| P | B | implementation |") {
        return Err(format!("{} has no results table", results.display()));
    }
    let png = dir.join("throughput.png");
    let bytes = std::fs::read(&png).map_err(|e| format!("reading {}: {e}", png.display()))?;
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(format!("{} is not a PNG", png.display()));
    }
    Ok(())
}
