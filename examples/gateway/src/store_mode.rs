//! `--store DIR`: store and forward for the SQLite mode.
//!
//! The batcher keeps its batches in `DIR/batches.db` (batch-tokio's `DiskStore`: SQLite, WAL,
//! `synchronous=FULL`, on a thread of its own) with write-ahead: every batch is on disk before
//! its first attempt and removed at its final outcome. The sensors add with `add_durable`, which
//! resolves once the reading is in the store (or delivered), one `fsync` per batch for every
//! reading that arrived meanwhile. The sink (`DIR/gateway.db`) is kept across runs.
//!
//! After a crash, the next run delivers what the store holds first, under the batches' original
//! sequence numbers, at least once: a batch delivered just before the crash but not yet removed
//! from the store is delivered again, and appears twice in the sink with the same content (the
//! dedup key is `(sensor, seq)`).
//!
//! Readings of run `n` (the `n`-th start with this directory, counted durably in `DIR/run`
//! before the first reading) are numbered from `n x 10^9`, so each sensor's numbers keep growing
//! across restarts and are never reused.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use batch_tokio::handler::BoxError;
use batch_tokio::{DiskStore, StorePolicy};

use crate::sensors::Reading;

/// The `Codec` tag of the store's records: change it whenever `Reading`'s encoding changes (a
/// store written with another tag is refused at open, never misread).
pub(crate) const READING_TAG: u32 = 0x6A7E_0001;

/// Sequence numbers reserved per run: run `n`'s readings are numbered from `n * RUN_STRIDE`.
pub(crate) const RUN_STRIDE: u64 = 1_000_000_000;

/// The policy of `--store`: write-ahead (spill on overflow stays on).
pub(crate) const POLICY: StorePolicy = StorePolicy::new().write_ahead(true);

/// The store's file in `dir`.
pub(crate) fn store_path(dir: &Path) -> PathBuf {
    dir.join("batches.db")
}

/// Creates `dir` if needed and claims the next run number: reads `DIR/run` (absent: 0) and
/// durably writes the number plus one (temporary file, `fsync`, rename, `fsync` of the
/// directory) before returning it. A crash before the rename claims the same number again,
/// which is harmless: no reading of that run was produced.
pub(crate) fn claim_run(dir: &Path) -> Result<u64, BoxError> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("run");
    let run = match std::fs::read_to_string(&path) {
        Ok(text) => {
            text.trim().parse::<u64>().map_err(|_| format!("{}: not a run number", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(format!("reading {}: {e}", path.display()).into()),
    };
    let tmp = dir.join("run.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    writeln!(file, "{}", run + 1)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(run)
}

/// Opens (or creates) the store in `dir`.
pub(crate) async fn open(dir: &Path) -> Result<DiskStore<Reading>, BoxError> {
    let path = store_path(dir);
    DiskStore::open(&path, READING_TAG)
        .await
        .map_err(|e| format!("opening the store {}: {e}", path.display()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_numbers_count_the_starts_in_a_directory() {
        let dir = std::env::temp_dir().join(format!("gateway-run-counter-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(claim_run(&dir).unwrap(), 0);
        assert_eq!(claim_run(&dir).unwrap(), 1);
        assert_eq!(claim_run(&dir).unwrap(), 2);
        std::fs::write(dir.join("run"), "garbage").unwrap();
        assert!(claim_run(&dir).is_err(), "a damaged counter is an error, not run 0 again");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
