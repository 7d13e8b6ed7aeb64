//! The live progress line on stderr.
//!
//! On a terminal it redraws one line with `\r` every 250 ms; otherwise (CI logs, pipes) it
//! prints a plain line every second.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use batch_tokio::Batcher;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::report::{as_f64, round_u64, thousands};
use crate::sensors::Reading;

/// A running progress printer.
#[derive(Debug)]
pub(crate) struct Progress {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts printing the batcher's counters and the readings produced so far.
    pub(crate) fn start(batcher: Batcher<Reading>, produced: Arc<AtomicU64>, start: Instant) -> Self {
        let tty = std::io::stderr().is_terminal();
        let every = if tty { Duration::from_millis(250) } else { Duration::from_secs(1) };
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            let (mut last_delivered, mut last_at) = (0, Instant::now());
            loop {
                let done = tokio::select! {
                    _ = &mut stopped => true,
                    _ = tick.tick() => false,
                };
                let m = batcher.metrics();
                let now = Instant::now();
                let dt = now.duration_since(last_at).as_secs_f64().max(1e-3);
                // The last line shows the average; the others the rate since the previous one.
                let rate = if done {
                    as_f64(m.delivered) / start.elapsed().as_secs_f64().max(1e-3)
                } else {
                    as_f64(m.delivered - last_delivered) / dt
                };
                (last_delivered, last_at) = (m.delivered, now);
                let line = format!(
                    "[{:5.1}s] produced {} | delivered {} | in flight {} | buffered {} | retries {} | dead {} | {}/s{}",
                    start.elapsed().as_secs_f64(),
                    thousands(produced.load(Ordering::Relaxed)),
                    thousands(m.delivered),
                    thousands(m.in_flight),
                    thousands(m.buffered),
                    thousands(m.retries),
                    thousands(m.dead_lettered),
                    thousands(round_u64(rate)),
                    if done { " avg" } else { "" },
                );
                let mut err = std::io::stderr().lock();
                if tty {
                    // Redraw in place: carriage return, the line, clear to the end.
                    let _ = write!(err, "\r{line}\x1b[K");
                    if done {
                        let _ = writeln!(err);
                    }
                } else {
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
                if done {
                    break;
                }
            }
        });
        Self { stop, task }
    }

    /// Prints a last line and stops.
    pub(crate) async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
