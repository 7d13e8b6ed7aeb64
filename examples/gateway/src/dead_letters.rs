//! The batcher's error callback: batches that failed every attempt end up here; so do, through
//! `on_reject` and `on_expire`, readings the sink rejected for good (with its reason) and
//! readings older than `max_age` that were not sent.
//!
//! `on_error` runs on the batcher's worker, so it only counts, remembers the keys for the
//! self-check and hands the readings to a writer thread (when `--dead-letters PATH` is given);
//! the file I/O happens off the worker.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};

use std::collections::BTreeMap;

use batch_tokio::handler::{BatchError, DeadLetter, Expired, RejectedItems};

use crate::sensors::Reading;

/// Collects dead letters.
#[derive(Debug)]
pub(crate) struct DeadLetters {
    batches: AtomicU64,
    items: AtomicU64,
    keys: Mutex<Vec<(u32, u64)>>,
    last_error: Mutex<Option<String>>,
    /// Readings the sink rejected.
    rejected: Mutex<Vec<(u32, u64)>>,
    /// How many readings the sink rejected, per reason.
    reasons: Mutex<BTreeMap<String, u64>>,
    /// Readings that expired.
    expired: Mutex<Vec<(u32, u64)>>,
    writer: Mutex<Option<mpsc::Sender<Vec<Reading>>>>,
    thread: Mutex<Option<std::thread::JoinHandle<std::io::Result<()>>>>,
}

impl DeadLetters {
    /// Starts collecting; with `file`, also appends each dead reading to it as a JSON line.
    pub(crate) fn new(file: Option<&Path>) -> std::io::Result<Self> {
        let (writer, thread) = match file {
            Some(path) => {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                let (tx, rx) = mpsc::channel::<Vec<Reading>>();
                let thread = std::thread::Builder::new()
                    .name("dead-letters".into())
                    .spawn(move || write_lines(file, &rx))?;
                (Some(tx), Some(thread))
            }
            None => (None, None),
        };
        Ok(Self {
            batches: AtomicU64::new(0),
            items: AtomicU64::new(0),
            keys: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            rejected: Mutex::new(Vec::new()),
            reasons: Mutex::new(BTreeMap::new()),
            expired: Mutex::new(Vec::new()),
            writer: Mutex::new(writer),
            thread: Mutex::new(thread),
        })
    }

    /// The `on_error` callback body.
    pub(crate) fn record(&self, error: &BatchError, letter: DeadLetter<Reading>) {
        tracing::debug!(
            seq = letter.seq(),
            attempts = letter.attempts(),
            items = letter.items().len(),
            %error,
            "batch dead-lettered"
        );
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(letter.items().len() as u64, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(letter.items().iter().map(|r| (r.sensor, r.seq)));
        if let Some(tx) = &*self.writer.lock().unwrap_or_else(PoisonError::into_inner) {
            // Take the readings by value; copy them only if a handler kept its batch.
            let items = letter.into_items().unwrap_or_else(|letter| letter.items().to_vec());
            let _ = tx.send(items);
        }
    }

    /// The `on_reject` callback body: remembers the keys and counts the reasons.
    pub(crate) fn rejected(&self, rejected: &RejectedItems<Reading>) {
        let mut keys = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
        let mut reasons = self.reasons.lock().unwrap_or_else(PoisonError::into_inner);
        for (reading, reason) in rejected.iter() {
            keys.push((reading.sensor, reading.seq));
            *reasons.entry(reason.to_string()).or_default() += 1;
        }
    }

    /// The `on_expire` callback body: remembers the keys.
    pub(crate) fn expired(&self, expired: &Expired<Reading>) {
        let mut keys = self.expired.lock().unwrap_or_else(PoisonError::into_inner);
        keys.extend(expired.items().iter().map(|r| (r.sensor, r.seq)));
    }

    /// The `(sensor, seq)` keys of the readings the sink rejected.
    pub(crate) fn rejected_keys(&self) -> Vec<(u32, u64)> {
        self.rejected.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many readings the sink rejected, per reason.
    pub(crate) fn reasons(&self) -> Vec<(String, u64)> {
        let reasons = self.reasons.lock().unwrap_or_else(PoisonError::into_inner);
        reasons.iter().map(|(reason, n)| (reason.clone(), *n)).collect()
    }

    /// The `(sensor, seq)` keys of the readings that expired.
    pub(crate) fn expired_keys(&self) -> Vec<(u32, u64)> {
        self.expired.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Dead batches so far.
    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Dead readings so far.
    pub(crate) fn items(&self) -> u64 {
        self.items.load(Ordering::Relaxed)
    }

    /// The last error that dead-lettered a batch.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The `(sensor, seq)` keys of every dead reading.
    pub(crate) fn keys(&self) -> Vec<(u32, u64)> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Closes the file writer (if any) and waits until everything is written.
    pub(crate) fn finish(&self) -> std::io::Result<()> {
        drop(self.writer.lock().unwrap_or_else(PoisonError::into_inner).take());
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        match thread {
            Some(t) => t.join().unwrap_or_else(|_| Err(std::io::Error::other("dead-letter writer panicked"))),
            None => Ok(()),
        }
    }
}

/// The writer thread: one JSON object per line, until the channel closes.
fn write_lines(file: std::fs::File, rx: &mpsc::Receiver<Vec<Reading>>) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(file);
    for batch in rx {
        for reading in &batch {
            serde_json::to_writer(&mut out, reading)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
}
