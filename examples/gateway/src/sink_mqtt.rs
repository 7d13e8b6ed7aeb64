//! The MQTT mode's sink: one QoS 1 publish per batch, delivered when its PUBACK arrives; and
//! the connection watcher that pauses the batcher while the broker is unreachable.
//!
//! rumqttc's `AsyncClient::publish` only queues a request for its event loop, so the PUBACK is
//! matched here: the event loop reports `Outgoing::Publish(pkid)` for each queued publish in
//! queue order, and `Incoming::PubAck(pkid)` when the broker acknowledges it. The handler
//! queues a waiter and its publish under one lock (so waiters and publishes stay in the same
//! order), the watcher gives the oldest unassigned waiter each packet id, and the PUBACK
//! resolves it.
//!
//! Each connection gets a fresh client and event loop. When a connection drops, the watcher
//! pauses the batcher and drops the connection with every waiter on it, so the attempts waiting
//! there fail at once (the batcher retries them after [`Batcher::resume`]); nothing queued on a
//! dead connection can be sent later and acknowledge the wrong waiter. A publish that reached
//! the broker but lost its PUBACK is published again: delivery is at-least-once, and the
//! consumer deduplicates by `(sensor, seq)` ([`crate::arrivals`]).
//!
//! The watcher stays as it is when store and forward arrives: pausing is what makes the
//! batcher hold (and, with a store, spill) the backlog; see [`crate::mqtt`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use batch_tokio::handler::{Batch, BoxError, Handler};
use batch_tokio::{Batcher, WeakBatcher};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::report::{Baseline, dur, thousands};
use crate::sensors::Reading;
use crate::stats::DeliveryStats;
use crate::wire::{self, Header, WireReading};

/// The topic batches are published to.
pub(crate) const TOPIC: &str = "gateway/readings";
/// The topic of the unbatched comparison (nobody subscribes to it).
const BASELINE_TOPIC: &str = "gateway/baseline";
/// How long a publish waits for its PUBACK on a live connection.
pub(crate) const PUBACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between connection attempts while the broker is down.
const RECONNECT_EVERY: Duration = Duration::from_millis(100);
/// Largest MQTT packet either side sends or accepts.
pub(crate) const MAX_PACKET: usize = 1 << 20;
/// rumqttc's request queue.
const REQUEST_QUEUE: usize = 64;

/// One live connection: its client and the waiters for PUBACKs on it.
struct Link {
    client: AsyncClient,
    /// Waiters whose publish is queued but has no packet id yet, oldest first.
    unassigned: VecDeque<oneshot::Sender<()>>,
    /// Waiters by packet id, for publishes on the wire.
    assigned: HashMap<u16, oneshot::Sender<()>>,
}

/// What the watcher saw of the outage, for the summary.
#[derive(Debug, Clone, Default)]
pub(crate) struct OutageLog {
    /// Connections lost.
    pub(crate) losses: u64,
    /// Reconnections after a loss.
    pub(crate) reconnects: u64,
    /// Connection attempts refused or failed while the broker was down.
    pub(crate) failed_connects: u64,
    /// Total time the batcher was paused for a lost connection.
    pub(crate) paused_for: Duration,
    /// Readings accepted while paused (held back in RAM), over all outages.
    pub(crate) accepted_while_paused: u64,
    /// Largest backlog (buffered + in flight + stored) when a connection came back.
    pub(crate) backlog_at_resume: u64,
    /// Most readings in the store when a connection came back (what the outage spilled).
    pub(crate) stored_at_resume: u64,
    /// How long the largest backlog took to be delivered after the reconnect.
    pub(crate) backlog_drained_in: Option<Duration>,
}

/// State shared by the handler and the watcher.
#[derive(Default)]
struct Shared {
    link: Mutex<Option<Link>>,
    published: AtomicU64,
    pubacks: AtomicU64,
    late_pubacks: AtomicU64,
    lost: AtomicU64,
    timed_out: AtomicU64,
    delivered_keys: Mutex<Vec<(u32, u64)>>,
    log: Mutex<OutageLog>,
    /// The backlog being drained after a reconnect.
    drain: Mutex<Option<Drain>>,
}

/// A backlog to time: done when the handler has delivered `target` readings in all.
#[derive(Debug, Clone, Copy)]
struct Drain {
    target: u64,
    backlog: u64,
    resumed: Instant,
}

impl Shared {
    fn link(&self) -> MutexGuard<'_, Option<Link>> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log(&self) -> MutexGuard<'_, OutageLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The handler has delivered `delivered` readings in all: is the backlog out?
    fn drained_up_to(&self, delivered: u64) {
        let done =
            self.drain.lock().unwrap_or_else(PoisonError::into_inner).take_if(|d| delivered >= d.target);
        if let Some(d) = done {
            let mut log = self.log();
            if d.backlog >= log.backlog_at_resume {
                log.backlog_at_resume = d.backlog;
                log.backlog_drained_in = Some(d.resumed.elapsed());
            }
        }
    }

    /// Publishes `payload` on the current connection and waits for its PUBACK.
    async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), BoxError> {
        let acked = {
            let mut link = self.link();
            let Some(link) = link.as_mut() else {
                self.lost.fetch_add(1, Ordering::Relaxed);
                return Err("uplink down: not connected to the broker".into());
            };
            let (tx, rx) = oneshot::channel();
            link.unassigned.push_back(tx);
            if let Err(e) = link.client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
                link.unassigned.pop_back();
                return Err(format!("queueing the publish: {e}").into());
            }
            rx
        };
        self.published.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(PUBACK_TIMEOUT, acked).await {
            Ok(Ok(())) => {
                self.pubacks.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(_)) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                Err("connection lost before the PUBACK".into())
            }
            Err(_) => {
                self.timed_out.fetch_add(1, Ordering::Relaxed);
                Err(format!("no PUBACK within {}", dur(PUBACK_TIMEOUT)).into())
            }
        }
    }
}

/// The batch handler: one publish per batch.
pub(crate) struct MqttSink {
    shared: Arc<Shared>,
    stats: Arc<DeliveryStats>,
}

impl std::fmt::Debug for MqttSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSink").field("topic", &TOPIC).finish_non_exhaustive()
    }
}

impl Handler<Reading> for MqttSink {
    type Error = BoxError;

    async fn handle(&self, batch: &mut Batch<Reading>) -> Result<(), BoxError> {
        let header = Header { batch_seq: batch.seq(), attempt: batch.attempt() };
        let payload = wire::encode(header, batch.iter().map(to_wire));
        let started = Instant::now();
        let result = self.shared.publish(TOPIC, payload).await;
        self.stats.attempt(started.elapsed());
        result?;
        self.stats.delivered(batch, Instant::now());
        let delivered = {
            let mut keys = self.shared.delivered_keys.lock().unwrap_or_else(PoisonError::into_inner);
            keys.extend(batch.iter().map(|r| (r.sensor, r.seq)));
            keys.len() as u64
        };
        self.shared.drained_up_to(delivered);
        Ok(())
    }
}

/// A reading in the payload's terms.
pub(crate) fn to_wire(r: &Reading) -> WireReading {
    WireReading { sensor: r.sensor, seq: r.seq, temperature: r.temperature, timestamp_ms: r.timestamp_ms }
}

/// The gateway's connection to the broker.
#[derive(Debug)]
pub(crate) struct Uplink {
    shared: Arc<Shared>,
    port: u16,
    watcher: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// What the uplink did, for the summary and the checks.
#[derive(Debug, Clone)]
pub(crate) struct UplinkReport {
    /// Publishes handed to the client (batch attempts that reached a connection).
    pub(crate) published: u64,
    /// PUBACKs that completed a waiting attempt.
    pub(crate) pubacks: u64,
    /// PUBACKs that came after their attempt had given up.
    pub(crate) late_pubacks: u64,
    /// Attempts failed because the connection was down or dropped.
    pub(crate) lost: u64,
    /// Attempts failed for want of a PUBACK on a live connection.
    pub(crate) timed_out: u64,
    /// Keys of the readings whose batch got its PUBACK.
    pub(crate) delivered_keys: Vec<(u32, u64)>,
    /// Connection losses, reconnects and the backlog.
    pub(crate) outage: OutageLog,
}

impl Uplink {
    /// The sink for the batcher and the uplink that will connect it to the broker on `port`.
    pub(crate) fn new(port: u16, stats: Arc<DeliveryStats>) -> (MqttSink, Self) {
        let shared = Arc::new(Shared::default());
        (MqttSink { shared: Arc::clone(&shared), stats }, Self { shared, port, watcher: None })
    }

    /// Pauses `batcher`, starts the connection watcher and waits for the first connection
    /// (which resumes the batcher).
    pub(crate) async fn connect(
        &mut self,
        batcher: &Batcher<Reading>,
        start: Instant,
    ) -> Result<(), BoxError> {
        batcher.pause();
        let (stop, stopped) = watch::channel(false);
        let (up_tx, mut up_rx) = watch::channel(false);
        let watcher = Watcher {
            shared: Arc::clone(&self.shared),
            batcher: batcher.downgrade(),
            port: self.port,
            start,
            stopped,
            up: up_tx,
        };
        self.watcher = Some((stop, tokio::spawn(watcher.run())));
        match tokio::time::timeout(Duration::from_secs(5), up_rx.wait_for(|up| *up)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!("could not connect to the broker on 127.0.0.1:{} within 5 s", self.port).into()),
        }
    }

    /// The comparison: publishes up to `max_items` readings one per publish, each waiting for
    /// its PUBACK, stopping early after `budget`.
    pub(crate) async fn baseline(
        &self,
        max_items: u64,
        sensors: u32,
        budget: Duration,
    ) -> Result<Baseline, BoxError> {
        let start = Instant::now();
        let mut rows = 0;
        while rows < max_items && start.elapsed() < budget {
            let r = Reading::synthetic(rows, sensors);
            let payload = wire::encode(Header { batch_seq: rows, attempt: 1 }, std::iter::once(to_wire(&r)));
            self.shared.publish(BASELINE_TOPIC, payload).await?;
            rows += 1;
        }
        Ok(Baseline { label: "one reading per publish", unit: "reading", rows, took: start.elapsed() })
    }

    /// What the batches' publishes did so far (call it before [`baseline`](Self::baseline),
    /// whose publishes are not batches).
    pub(crate) fn report(&self) -> UplinkReport {
        let s = &self.shared;
        UplinkReport {
            published: s.published.load(Ordering::Relaxed),
            pubacks: s.pubacks.load(Ordering::Relaxed),
            late_pubacks: s.late_pubacks.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
            timed_out: s.timed_out.load(Ordering::Relaxed),
            delivered_keys: std::mem::take(
                &mut *s.delivered_keys.lock().unwrap_or_else(PoisonError::into_inner),
            ),
            outage: s.log().clone(),
        }
    }

    /// Disconnects.
    pub(crate) async fn finish(mut self) {
        if let Some((stop, task)) = self.watcher.take() {
            stop.send_replace(true);
            let _ = task.await;
        }
    }
}

/// The connection watcher: connects, routes packet ids and PUBACKs to waiters, pauses the
/// batcher when the connection drops and resumes it when a new one is up.
struct Watcher {
    shared: Arc<Shared>,
    batcher: WeakBatcher<Reading>,
    port: u16,
    start: Instant,
    stopped: watch::Receiver<bool>,
    /// Turns true at the first connection.
    up: watch::Sender<bool>,
}

/// When the watcher lost the connection, and the counters at that moment.
struct Down {
    since: Instant,
    accepted: u64,
}

impl Watcher {
    async fn run(mut self) {
        let mut options = MqttOptions::new(format!("gateway-{}", std::process::id()), "127.0.0.1", self.port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_clean_session(true);
        options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        // `None` before the first connection: the batcher was paused by `connect`.
        let mut down: Option<Down> = None;
        loop {
            let (client, mut eventloop) = AsyncClient::new(options.clone(), REQUEST_QUEUE);
            let connected = tokio::select! {
                r = eventloop.poll() => r,
                _ = self.stopped.wait_for(|s| *s) => return,
            };
            match connected {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {}
                Ok(other) => {
                    tracing::warn!(?other, "unexpected first event from the MQTT client");
                    continue;
                }
                Err(e) => {
                    self.shared.log().failed_connects += 1;
                    tracing::debug!(error = %e, "connecting to the broker");
                    tokio::select! {
                        () = tokio::time::sleep(RECONNECT_EVERY) => continue,
                        _ = self.stopped.wait_for(|s| *s) => return,
                    }
                }
            }
            *self.shared.link() =
                Some(Link { client, unassigned: VecDeque::new(), assigned: HashMap::new() });
            self.connected(down.take());
            let error = self.serve(&mut eventloop).await;
            let Some(error) = error else {
                // Stopped: say goodbye, briefly.
                let client = self.shared.link().take().map(|l| l.client);
                if let Some(client) = client {
                    let _ = client.try_disconnect();
                    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
                }
                return;
            };
            down = Some(self.connection_lost(&error));
        }
    }

    /// Routes events until the connection fails (`Some(error)`) or the watcher is stopped.
    async fn serve(&mut self, eventloop: &mut EventLoop) -> Option<String> {
        loop {
            let event = tokio::select! {
                r = eventloop.poll() => r,
                _ = self.stopped.wait_for(|s| *s) => return None,
            };
            match event {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    let mut link = self.shared.link();
                    if let Some(link) = link.as_mut()
                        && let Some(waiter) = link.unassigned.pop_front()
                    {
                        link.assigned.insert(pkid, waiter);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    let waiter = self.shared.link().as_mut().and_then(|l| l.assigned.remove(&ack.pkid));
                    if let Some(waiter) = waiter
                        && waiter.send(()).is_err()
                    {
                        self.shared.late_pubacks.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // rumqttc held a publish back because its packet id is still unacknowledged
                // (possible only after PUBACK timeouts): start over on a fresh connection
                // rather than track ids that are reused.
                Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                    return Some(format!("packet id {pkid} still unacknowledged; reconnecting"));
                }
                Ok(_) => {}
                Err(e) => return Some(describe(&e)),
            }
        }
    }

    /// The connection dropped: pause the batcher, then fail every attempt waiting on it.
    ///
    /// While paused, the batcher holds the backlog in RAM and spills what does not fit to its
    /// store by itself.
    fn connection_lost(&mut self, error: &str) -> Down {
        let link = self.shared.link().take();
        let batcher = self.batcher.upgrade();
        let accepted = batcher.as_ref().map_or(0, |b| {
            b.pause();
            b.metrics().accepted
        });
        // Dropping the connection drops every waiter: those attempts fail now.
        drop(link);
        self.shared.log().losses += 1;
        let buffered = batcher.map_or(0, |b| b.metrics().buffered);
        crate::mqtt::announce(
            self.start,
            &format!("uplink lost ({error}): batcher paused, {} readings buffered", thousands(buffered)),
        );
        Down { since: Instant::now(), accepted }
    }

    /// A connection is up: resume the batcher (after a loss, note the backlog and time its drain).
    fn connected(&mut self, down: Option<Down>) {
        let Some(batcher) = self.batcher.upgrade() else { return };
        let m = batcher.metrics();
        batcher.resume();
        self.up.send_replace(true);
        let Some(down) = down else { return };
        let backlog = m.buffered + m.in_flight + m.stored;
        let paused = down.since.elapsed();
        {
            let mut log = self.shared.log();
            log.reconnects += 1;
            log.paused_for += paused;
            log.accepted_while_paused += m.accepted - down.accepted;
            log.stored_at_resume = log.stored_at_resume.max(m.stored);
        }
        crate::mqtt::announce(
            self.start,
            &format!(
                "uplink back after {}: batcher resumed with a backlog of {} readings ({} on disk)",
                dur(paused),
                thousands(backlog),
                thousands(m.stored)
            ),
        );
        // Time how long the backlog takes to go out: the handler stops the clock.
        let delivered =
            self.shared.delivered_keys.lock().unwrap_or_else(PoisonError::into_inner).len() as u64;
        *self.shared.drain.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Drain { target: delivered + backlog, backlog, resumed: Instant::now() });
        self.shared.drained_up_to(delivered);
    }
}

/// A connection error in a few words.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::Io(io) => format!("I/O: {}", io.kind()),
        other => other.to_string(),
    }
}
