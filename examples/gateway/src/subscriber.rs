//! The MQTT mode's consumer: a subscriber on the batch topic (QoS 1, persistent session) that
//! decodes every publish and records its readings in an [`Arrivals`] ledger, which removes
//! duplicates by `(sensor, seq)` and checks each sensor's order.
//!
//! Its session is persistent (`clean_session = false`, a fixed client id) and the broker keeps
//! sessions across its restart, so publishes that arrive while the subscriber reconnects are
//! queued for it rather than lost. rumqttc reconnects when its event loop is polled again after
//! an error; the subscriber subscribes again only if the broker forgot its session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use batch_tokio::handler::BoxError;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::arrivals::Arrivals;
use crate::sink_mqtt::{MAX_PACKET, TOPIC};
use crate::wire;

/// Pause between reconnection attempts.
const RECONNECT_EVERY: Duration = Duration::from_millis(100);

/// State shared with the subscriber's task.
#[derive(Debug, Default)]
struct Shared {
    arrivals: Mutex<Arrivals>,
    arrived: Notify,
    connects: AtomicU64,
    subscribes: AtomicU64,
    lost: AtomicU64,
    undecodable: AtomicU64,
}

/// A running subscriber.
#[derive(Debug)]
pub(crate) struct Subscriber {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What the subscriber saw.
#[derive(Debug)]
pub(crate) struct SubscriberReport {
    /// The deduplicated ledger.
    pub(crate) arrivals: Arrivals,
    /// Connections made (the first included).
    pub(crate) connects: u64,
    /// SUBSCRIBEs sent (once per session the broker did not remember).
    pub(crate) subscribes: u64,
    /// Connections lost.
    pub(crate) lost: u64,
    /// Publishes whose payload could not be decoded.
    pub(crate) undecodable: u64,
}

impl Subscriber {
    /// Connects to the broker on `port`, subscribes to the batch topic and waits for the SUBACK.
    pub(crate) async fn start(port: u16) -> Result<Self, BoxError> {
        let mut options =
            MqttOptions::new(format!("gateway-subscriber-{}", std::process::id()), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_clean_session(false);
        options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        let (client, eventloop) = AsyncClient::new(options, 64);
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = watch::channel(false);
        let (subscribed_tx, mut subscribed) = watch::channel(false);
        let task = tokio::spawn(run(client, eventloop, Arc::clone(&shared), stopped, subscribed_tx));
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), subscribed.wait_for(|s| *s)).await {
            Ok(Self { shared, stop, task })
        } else {
            task.abort();
            Err(format!("the subscriber could not subscribe on 127.0.0.1:{port} within 5 s").into())
        }
    }

    /// Waits until `n` distinct readings have arrived, or `timeout`; returns how long it waited.
    pub(crate) async fn wait_for(&self, n: u64, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let arrived = self.shared.arrived.notified();
            if self.shared.arrivals.lock().unwrap_or_else(PoisonError::into_inner).unique() >= n {
                break;
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() || tokio::time::timeout(left, arrived).await.is_err() {
                break;
            }
        }
        start.elapsed()
    }

    /// Disconnects and hands over what arrived.
    pub(crate) async fn finish(self) -> SubscriberReport {
        self.stop.send_replace(true);
        let _ = self.task.await;
        let s = &self.shared;
        SubscriberReport {
            arrivals: std::mem::take(&mut *s.arrivals.lock().unwrap_or_else(PoisonError::into_inner)),
            connects: s.connects.load(Ordering::Relaxed),
            subscribes: s.subscribes.load(Ordering::Relaxed),
            lost: s.lost.load(Ordering::Relaxed),
            undecodable: s.undecodable.load(Ordering::Relaxed),
        }
    }
}

/// The subscriber's event loop.
async fn run(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
    subscribed: watch::Sender<bool>,
) {
    let mut connected = false;
    loop {
        let event = tokio::select! {
            r = eventloop.poll() => r,
            _ = stopped.wait_for(|s| *s) => break,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                shared.connects.fetch_add(1, Ordering::Relaxed);
                connected = true;
                if !ack.session_present {
                    shared.subscribes.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = client.try_subscribe(TOPIC, QoS::AtLeastOnce) {
                        tracing::warn!(error = %e, "subscribing");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                subscribed.send_replace(true);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => match wire::decode(&p.payload) {
                Ok(batch) => {
                    shared.arrivals.lock().unwrap_or_else(PoisonError::into_inner).record_batch(
                        batch.header.batch_seq,
                        batch.readings.iter().map(|r| (r.sensor, r.seq)),
                    );
                    shared.arrived.notify_waiters();
                }
                Err(e) => {
                    shared.undecodable.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, topic = %p.topic, "undecodable publish");
                }
            },
            Ok(_) => {}
            Err(e) => {
                if std::mem::replace(&mut connected, false) {
                    shared.lost.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(error = %e, "subscriber connection");
                tokio::select! {
                    () = tokio::time::sleep(RECONNECT_EVERY) => {}
                    _ = stopped.wait_for(|s| *s) => break,
                }
            }
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}
