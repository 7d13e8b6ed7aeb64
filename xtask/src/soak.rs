//! `soak [ITEMS] [soak options]`: a long run of batch-tokio that watches memory. Not part of CI.
//!
//! Builds and runs the `soak` binary of `batch-tests` (`tests/src/bin/soak.rs`) with
//! `--release --locked`: 10^8 items by default from four producers, about 1% of attempts failing
//! (seeded, retried), pause/resume toggled periodically, RSS sampled every 20 ms. It fails
//! if any item is not delivered or dead-lettered exactly once, or if the mean RSS of the last 10%
//! of the samples exceeds that of the first 10% by more than 10% plus 4 MiB.
//!
//! Arguments go to the binary as they are: a count (`1e9`), `--items N`, `--producers P`,
//! `--seed S`, `--fail-permille F`, `--sample-ms MS`.

use crate::util::{Result, cargo, root, run};

/// Runs the soak (`args` as after `cargo xtask soak`).
pub(crate) fn soak(args: &[String]) -> Result {
    run(cargo(&root())
        .args(["run", "--release", "--locked", "-p", "batch-tests", "--bin", "soak", "--"])
        .args(args))
}
