//! `--mqtt`: a real uplink that goes down.
//!
//! The demo starts its own Mosquitto broker ([`broker`](crate::broker)), a subscriber that
//! plays the cloud side ([`subscriber`](crate::subscriber)), and the gateway's publisher
//! ([`sink_mqtt`](crate::sink_mqtt)): one QoS 1 publish per batch, delivered when its PUBACK
//! arrives. Half-way through the run it stops the broker for `--outage-ms`; the batcher is
//! paused while the uplink is down, holds what fits in RAM (`--capacity`, 20,000 readings by
//! default), spills the rest to a disk store (batch-tokio's `DiskStore`, in the broker's
//! temporary directory, removed at exit) in whole batches, and after the reconnect drains the
//! stored batches first, then RAM, in order. At the end the subscriber's ledger must hold every
//! delivered reading once after dedup, in order per sensor.
//!
//! The store here is spill only (no write-ahead, plain `add`): it holds the backlog of an
//! outage longer than RAM, and a batch is written once, when RAM is full. For durability across
//! a crash, see `--store` ([`store_mode`](crate::store_mode)).

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use batch_tokio::handler::BoxError;
use batch_tokio::{Batcher, DiskStore, Metrics, StorePolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::Options;
use crate::broker::{Broker, OutageReport, schedule_outage};
use crate::check::{Check, SinkContents};
use crate::report::{Baseline, dur, round_u64, thousands};
use crate::sensors::{Reading, SensorReport};
use crate::sink_mqtt::{MqttSink, OutageLog, PUBACK_TIMEOUT, Uplink, UplinkReport};
use crate::stats::DeliveryStats;
use crate::subscriber::{Subscriber, SubscriberReport};

/// The batcher's capacity in RAM; the outage's backlog beyond it spills to the store.
pub(crate) const MIN_CAPACITY: usize = 20_000;
/// Spill on overflow only: batches go to disk when RAM is full and the uplink is down.
pub(crate) const POLICY: StorePolicy = StorePolicy::new().spill(true);
/// Room beyond the outage itself: reconnecting, and the batches in flight when it starts.
const RECONNECT_MARGIN: Duration = Duration::from_secs(1);
/// How long the subscriber gets, after the drain, to receive what was delivered.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Readings the sensors offer during the outage and the reconnect margin, plus two batches;
/// `None` when unthrottled or without an outage.
fn outage_need(opts: &Options, max_batch: usize) -> Option<usize> {
    if opts.rate == 0 || opts.outage.is_zero() {
        return None;
    }
    let offered = f64::from(opts.rate) * f64::from(opts.sensors);
    Some(round_u64(offered * (opts.outage + RECONNECT_MARGIN).as_secs_f64()) as usize + 2 * max_batch)
}

/// Prints a timestamped event line on stderr, between progress lines.
pub(crate) fn announce(start: Instant, text: &str) {
    let line = format!("[{:5.1}s] {text}", start.elapsed().as_secs_f64());
    let mut err = std::io::stderr().lock();
    if std::io::stderr().is_terminal() {
        // Overwrite the progress line in place; the next redraw goes below.
        let _ = writeln!(err, "\r{line}\x1b[K");
    } else {
        let _ = writeln!(err, "{line}");
    }
}

/// The broker, the subscriber and the (not yet connected) uplink.
#[derive(Debug)]
pub(crate) struct Setup {
    broker: Broker,
    subscriber: Subscriber,
    uplink: Uplink,
}

impl Setup {
    /// Starts the broker and the subscriber; returns the sink for the batcher.
    pub(crate) async fn start(stats: Arc<DeliveryStats>) -> Result<(Self, MqttSink), BoxError> {
        let broker = Broker::start().await?;
        let subscriber = Subscriber::start(broker.port()).await?;
        let (sink, uplink) = Uplink::new(broker.port(), stats);
        Ok((Self { broker, subscriber, uplink }, sink))
    }

    /// Opens the spill store in the broker's temporary directory (removed with it at exit).
    pub(crate) async fn open_store(&self) -> Result<DiskStore<Reading>, BoxError> {
        let path = self.broker.dir().join("batches.db");
        DiskStore::open(&path, crate::store_mode::READING_TAG)
            .await
            .map_err(|e| format!("opening the store {}: {e}", path.display()).into())
    }

    /// Connects the uplink (the batcher stays paused until it is) and schedules the outage.
    pub(crate) async fn connect(
        mut self,
        batcher: &Batcher<Reading>,
        opts: &Options,
        start: Instant,
    ) -> Result<MqttRun, BoxError> {
        self.uplink.connect(batcher, start).await?;
        let sink_text = format!(
            "MQTT to {}, one QoS 1 publish per batch (delivered at its PUBACK)",
            self.broker.describe()
        );
        let outage_at = (!opts.outage.is_zero()).then(|| opts.duration / 2);
        let (cancel, cancelled) = watch::channel(false);
        let broker = match outage_at {
            Some(at) => Err(schedule_outage(self.broker, start, at, opts.outage, cancelled)),
            None => Ok(self.broker),
        };
        Ok(MqttRun { broker, cancel, outage_at, subscriber: self.subscriber, uplink: self.uplink, sink_text })
    }
}

/// A run in progress.
#[derive(Debug)]
pub(crate) struct MqttRun {
    /// The broker, or the outage task that holds it.
    broker: Result<Broker, JoinHandle<(Broker, OutageReport)>>,
    cancel: watch::Sender<bool>,
    outage_at: Option<Duration>,
    subscriber: Subscriber,
    uplink: Uplink,
    sink_text: String,
}

/// What the MQTT mode adds to the summary.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The unbatched comparison.
    pub(crate) baseline: Option<Baseline>,
    /// The subscriber's deduplicated contents.
    pub(crate) contents: SinkContents,
    /// Summary rows.
    pub(crate) extra: Vec<(String, String)>,
    /// MQTT-specific checks.
    pub(crate) checks: Vec<Check>,
}

/// What [`MqttRun::finish`] needs from the rest of the run.
#[derive(Debug)]
pub(crate) struct Outcome<'a> {
    /// The options.
    pub(crate) opts: &'a Options,
    /// The batcher's final counters.
    pub(crate) metrics: &'a Metrics,
    /// The sensors' reports.
    pub(crate) sensors: &'a [SensorReport],
    /// The batcher's capacity.
    pub(crate) capacity: usize,
    /// The batcher's `max_batch`.
    pub(crate) max_batch: usize,
    /// Readings for the unbatched comparison; `None` skips it.
    pub(crate) baseline_cap: Option<u64>,
}

impl MqttRun {
    /// Where batches go, in words.
    pub(crate) fn sink_text(&self) -> String {
        self.sink_text.clone()
    }

    /// After the drain: ends the outage schedule, lets the subscriber catch up, runs the
    /// comparison, stops everything and checks what arrived.
    pub(crate) async fn finish(self, o: &Outcome<'_>) -> Result<Finished, BoxError> {
        self.cancel.send_replace(true);
        let (broker, outage) = match self.broker {
            Ok(broker) => (broker, None),
            Err(task) => {
                let (broker, report) = task.await?;
                (broker, Some(report))
            }
        };
        let settle = self.subscriber.wait_for(o.metrics.delivered, SETTLE_TIMEOUT).await;
        let up = self.uplink.report();
        let baseline = match o.baseline_cap {
            Some(cap) => {
                eprintln!(
                    "comparing with one reading per publish ({} at most, {} at most, each waiting for its PUBACK)...",
                    thousands(cap),
                    dur(crate::BASELINE_BUDGET)
                );
                Some(self.uplink.baseline(cap, o.opts.sensors, crate::BASELINE_BUDGET).await?)
            }
            None => None,
        };
        self.uplink.finish().await;
        let sub = self.subscriber.finish().await;
        let broker_text = format!(
            "{}, topic {}; config and saved sessions in {} (removed at exit)",
            broker.describe(),
            crate::sink_mqtt::TOPIC,
            broker.dir().display()
        );
        broker.shutdown().await;

        let seen = Seen { missing: sub.arrivals.missing(&up.delivered_keys), up, sub, outage, settle };
        let extra = rows(&seen, o, broker_text, self.outage_at);
        let checks = checks(&seen, o.metrics, o.capacity);
        let a = &seen.sub.arrivals;
        let contents = SinkContents {
            what: "unique readings at the subscriber (after dedup)",
            count: a.unique(),
            // The ledger keeps one copy per (sensor, seq); the copies it dropped are reported above.
            duplicates: 0,
            order_violations: None,
            keys: a.keys().to_vec(),
        };
        Ok(Finished { baseline, contents, extra, checks })
    }
}

/// What the uplink, the subscriber and the outage did.
struct Seen {
    up: UplinkReport,
    sub: SubscriberReport,
    outage: Option<OutageReport>,
    /// How long the subscriber took to catch up after the drain.
    settle: Duration,
    /// PUBACKed readings the subscriber never received.
    missing: u64,
}

/// The MQTT rows of the summary.
fn rows(
    seen: &Seen,
    o: &Outcome<'_>,
    broker_text: String,
    outage_at: Option<Duration>,
) -> Vec<(String, String)> {
    let Seen { up, sub, outage, settle, missing } = seen;
    let a = &sub.arrivals;
    let waited: u64 = o.sensors.iter().map(|s| s.waited).sum();
    let log = &up.outage;
    let mut extra = vec![
        ("broker".to_owned(), broker_text),
        (
            "publishes / PUBACKs".to_owned(),
            format!(
                "{} / {}  ({} attempts failed on a lost connection, {} without a PUBACK in {}{})",
                thousands(up.published),
                thousands(up.pubacks),
                thousands(up.lost),
                thousands(up.timed_out),
                dur(PUBACK_TIMEOUT),
                if up.late_pubacks > 0 {
                    format!(", {} PUBACKs came late", up.late_pubacks)
                } else {
                    String::new()
                }
            ),
        ),
        ("outage".to_owned(), outage_text(outage_at, outage.as_ref(), o.opts.outage)),
        (
            "uplink".to_owned(),
            format!(
                "lost {}x, reconnected {}x ({} refused connection attempts); paused {}",
                log.losses,
                log.reconnects,
                log.failed_connects,
                dur(log.paused_for)
            ),
        ),
        ("held back".to_owned(), held_back_text(o, log, waited)),
        (
            "subscriber received".to_owned(),
            format!(
                "{} readings in {} publishes ({} batches): {} unique, {} duplicates removed\n\
                     (by (sensor, seq); publishes that repeated a batch: {}); {} connections ({} lost),\n\
                     {} SUBSCRIBEs; caught up {} after the drain",
                thousands(a.received()),
                thousands(a.publishes()),
                thousands(a.batches()),
                thousands(a.unique()),
                thousands(a.duplicates()),
                thousands(a.duplicate_batches()),
                sub.connects,
                sub.lost,
                sub.subscribes,
                dur(*settle)
            ),
        ),
        (
            "missing / out of order".to_owned(),
            format!(
                "{} / {}  (PUBACKed readings never received / first copies after a later one, {} sensors)",
                thousands(*missing),
                thousands(a.order_violations()),
                a.sensors()
            ),
        ),
    ];
    if sub.undecodable > 0 {
        extra.push(("undecodable publishes".to_owned(), thousands(sub.undecodable)));
    }
    extra
}

/// The MQTT checks.
fn checks(seen: &Seen, m: &Metrics, capacity: usize) -> Vec<Check> {
    let Seen { up, sub, outage, missing, .. } = seen;
    let missing = *missing;
    let a = &sub.arrivals;
    let log = &up.outage;
    let by_sensor: Vec<String> =
        a.order_violations_by_sensor().iter().map(|(s, n)| format!("sensor {s}: {n}")).collect();
    let mut checks = vec![
        Check {
            ok: up.pubacks == m.batches_delivered,
            text: format!(
                "every delivered batch had its PUBACK: PUBACKs {} = batches delivered {}",
                thousands(up.pubacks),
                thousands(m.batches_delivered)
            ),
        },
        Check {
            ok: missing == 0 && sub.undecodable == 0,
            text: format!(
                "the subscriber received every PUBACKed reading: {} of {} ({missing} missing, {} undecodable)",
                thousands(up.delivered_keys.len() as u64 - missing),
                thousands(up.delivered_keys.len() as u64),
                sub.undecodable
            ),
        },
        Check {
            ok: a.order_violations() == 0,
            text: format!(
                "each sensor's readings arrived in seq order after dedup ({} out of order{})",
                a.order_violations(),
                if by_sensor.is_empty() { String::new() } else { format!(": {}", by_sensor.join(", ")) }
            ),
        },
        Check {
            ok: m.stored == 0 && m.store_lost == 0,
            text: format!(
                "the store is empty at the end and lost nothing ({} left, {} lost)",
                thousands(m.stored),
                thousands(m.store_lost)
            ),
        },
        Check {
            ok: m.dead_lettered == 0,
            text: format!(
                "the outage cost no reading: none dead-lettered ({} found)",
                thousands(m.dead_lettered)
            ),
        },
    ];
    if let Some(report) = &outage {
        if let Some(error) = &report.error {
            checks.push(Check { ok: false, text: format!("the outage: {error}") });
        } else if report.stopped_at.is_some() {
            checks.push(Check {
                ok: report.back_at.is_some() && log.reconnects >= 1,
                text: format!(
                    "the broker went down and came back, and the uplink reconnected ({} reconnects)",
                    log.reconnects
                ),
            });
        }
    }
    if log.accepted_while_paused > capacity as u64 {
        checks.push(Check {
            ok: log.stored_at_resume > 0 && m.flushes.store > 0,
            text: format!(
                "the backlog beyond RAM ({} accepted while down, capacity {}) went through the store: \
                 {} on disk at the reconnect, {} batches loaded back",
                thousands(log.accepted_while_paused),
                thousands(capacity as u64),
                thousands(log.stored_at_resume),
                thousands(m.flushes.store)
            ),
        });
    }
    checks
}

/// The outage, as planned and as it went.
fn outage_text(at: Option<Duration>, report: Option<&OutageReport>, length: Duration) -> String {
    let Some(at) = at else { return "none (--outage-ms 0)".to_owned() };
    match report {
        Some(r) => match (r.stopped_at, r.back_at, r.length()) {
            (Some(stopped), Some(back), Some(len)) => format!(
                "broker stopped at {} (SIGTERM; it saved its sessions and exited in {}),\n\
                 listening again at {}: down {} (planned: {} at half-way)",
                dur(stopped),
                dur(r.exit_took),
                dur(back),
                dur(len),
                dur(length)
            ),
            (None, _, _) => format!("planned at {}, not reached (the run ended first)", dur(at)),
            _ => format!("broker stopped, not back: {}", r.error.clone().unwrap_or_default()),
        },
        None => format!("planned at {}", dur(at)),
    }
}

/// What the outage held back, and where it was held.
fn held_back_text(o: &Outcome<'_>, log: &OutageLog, waited: u64) -> String {
    let offered = u64::from(o.opts.rate) * u64::from(o.opts.sensors);
    let capacity = thousands(o.capacity as u64);
    let sizing = match outage_need(o.opts, o.max_batch) {
        None if o.opts.rate == 0 => {
            format!("RAM capacity {capacity} (unthrottled sensors: spill and backpressure pace them)")
        }
        None => format!("RAM capacity {capacity} (no outage)"),
        Some(need) => format!(
            "RAM capacity {capacity}; the outage offers {} ({} + {} reconnect margin at {} readings/s,\n\
             plus two batches)",
            thousands(need as u64),
            dur(o.opts.outage),
            dur(RECONNECT_MARGIN),
            thousands(offered)
        ),
    };
    let drained = log
        .backlog_drained_in
        .map_or_else(String::new, |d| format!(", delivered {} after the reconnect", dur(d)));
    let waits = if waited == 0 {
        "no sensor ever waited for room".to_owned()
    } else {
        format!("sensors waited for room {} times", thousands(waited))
    };
    let m = o.metrics;
    format!(
        "{} readings accepted while the uplink was down: {} of them on disk at the reconnect\n\
         (spilled in whole batches), the rest in RAM; backlog at reconnect {}{drained};\n\
         {} batches loaded back from the store, stored first; {} left in it, {} lost by it;\n{sizing}; {waits}",
        thousands(log.accepted_while_paused),
        thousands(log.stored_at_resume),
        thousands(log.backlog_at_resume),
        thousands(m.flushes.store),
        thousands(m.stored),
        thousands(m.store_lost),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Options {
        match crate::args::parse(args.iter().map(|s| (*s).to_owned())).unwrap() {
            crate::args::Parsed::Run(o) => o,
            other => unreachable!("{other:?}"),
        }
    }

    #[test]
    fn the_default_outage_overflows_ram_so_it_spills() {
        // 8 sensors x 2 kHz = 16,000 readings/s for 3 s + 1 s, plus two batches of 500.
        assert_eq!(outage_need(&opts(&["--mqtt"]), 500), Some(65_000));
        assert!(outage_need(&opts(&["--mqtt"]), 500).unwrap() > MIN_CAPACITY);
        // Unthrottled sensors and no outage: nothing to size for.
        assert_eq!(outage_need(&opts(&["--mqtt", "--rate", "0"]), 500), None);
        assert_eq!(outage_need(&opts(&["--mqtt", "--outage-ms", "0"]), 500), None);
    }
}
