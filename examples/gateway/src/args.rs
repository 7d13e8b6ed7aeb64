//! Command-line options, parsed with the standard library only.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The help text printed by `--help`.
pub(crate) const HELP: &str = "\
gateway: an IoT gateway built on batch-tokio.

Simulated sensors produce temperature readings; a batcher collects them and delivers them in
batches: into a SQLite database (default), by HTTP POST to a local collector (--http), or as
MQTT publishes to a Mosquitto broker the demo starts itself (--mqtt). At the end it prints a
summary, compares against unbatched delivery and checks its own accounting (exit code 1 when a
check fails).

USAGE:
    gateway [OPTIONS]

OPTIONS:
    --sensors N          simulated sensors                                   [default: 8]
    --rate HZ            readings per second per sensor; 0 = as fast as the
                         sink takes them (backpressure)                      [default: 2000]
    --seconds S          how long the sensors run (fractions allowed)        [default: 5]
    --http               deliver by HTTP POST to a local collector instead of SQLite
    --mqtt               publish each batch with QoS 1 to a private Mosquitto broker (started
                         on a free 127.0.0.1 port; needs `mosquitto` installed); a batch is
                         delivered when its PUBACK arrives, and a subscriber checks what arrived
    --db PATH            SQLite file, recreated each run (kept with --store) [default: gateway.db,
                         DIR/gateway.db with --store]
    --store DIR          store and forward (SQLite mode): the batcher keeps its batches in
                         DIR/batches.db, written ahead before each delivery attempt, and the
                         sensors add with add_durable; a restart delivers what the store holds
                         first (at least once, dedup key (sensor, seq)). Readings are numbered
                         from run x 10^9 (DIR/run counts the starts). When stdout is not a
                         terminal, each reading confirmed durable is printed as a line
                         `durable SENSOR SEQ` (for cargo xtask crash). --mqtt always spills to a
                         store in its temporary directory
    --capacity N         readings the batcher holds in RAM        [default: 20000]
    --fail-rate P        share of delivery attempts that fail on purpose: HTTP 503s, or
                         SQLite transactions rolled back half-way  [default: 0.1 with --http, else 0]
    --malformed-rate P   --http: share of readings the sensors garble (-127 °C from a
                         disconnected probe, or no value); the collector rejects them per item,
                         and the batcher hands them to on_reject      [default: 0.01 with --http]
    --outage-ms MS       half-way through the run, for MS ms (0 = no outage):
                         --http: the collector answers 503 to everything, so some batches
                         exhaust their retries and are dead-lettered          [default: 300]
                         --mqtt: the broker is stopped and restarted; the batcher pauses,
                         holds the backlog in RAM and drains it after the reconnect [default: 3000]
    --dead-letters PATH  also append dead-lettered readings to PATH as JSON lines
    --seed N             seed for injected failures and retry jitter         [default: 42]
    --metrics-addr ADDR  serve the batcher's counters at http://ADDR/metrics in Prometheus text
                         format (OpenTelemetry names, see batch_tokio::export); port 0 picks a
                         free one and the URL is printed at the start; `off` serves nothing
                                                                   [default: 127.0.0.1:0]
    --metrics-hold       after the summary, print the final metrics() and keep serving
                         /metrics until standard input closes (for scripts that scrape the
                         final figures; Ctrl-D or Ctrl-C ends it)
    --bench-store        measure throughput with and without the store (same workload each
                         way, medians of interleaved runs) and exit
    --dump-db PATH       print each row of a gateway SQLite file as
                         `row ID SENSOR SEQ TEMPERATURE TIMESTAMP_MS BATCH` and exit
    -h, --help           print this help

Ctrl-C stops the sensors early and drains what was accepted; a second Ctrl-C abandons the drain.
Log verbosity: RUST_LOG (e.g. RUST_LOG=batch_tokio=warn to see every failed attempt).

EXAMPLES:
    cargo run --release -p gateway --bin gateway
    cargo run --release -p gateway --bin gateway -- --http
    cargo run --release -p gateway --bin gateway -- --mqtt
    cargo run --release -p gateway --bin gateway -- --seconds 1 --rate 500
    cargo run --release -p gateway --bin gateway -- --metrics-addr 127.0.0.1:9898 --metrics-hold
";

/// Where batches go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One SQLite transaction per batch.
    Sqlite,
    /// One HTTP POST per batch to the local collector.
    Http,
    /// One MQTT QoS 1 publish per batch to a private Mosquitto broker.
    Mqtt,
}

/// The parsed options.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// How many sensor tasks run.
    pub(crate) sensors: u32,
    /// Readings per second per sensor; 0 means unthrottled.
    pub(crate) rate: u32,
    /// How long the sensors run.
    pub(crate) duration: Duration,
    /// Where batches go.
    pub(crate) mode: Mode,
    /// The SQLite database file (SQLite mode).
    pub(crate) db: PathBuf,
    /// Share of delivery attempts failed on purpose.
    pub(crate) fail_rate: f64,
    /// `--http`: share of readings the sensors garble (the collector rejects them).
    pub(crate) malformed_rate: f64,
    /// HTTP and MQTT modes: how long the collector's or the broker's outage lasts.
    pub(crate) outage: Duration,
    /// Optional JSON-lines file for dead letters.
    pub(crate) dead_letters: Option<PathBuf>,
    /// Seed for the injected failures and the retry jitter.
    pub(crate) seed: u64,
    /// Where `/metrics` is served (`None`: not served).
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// Keep serving `/metrics` after the summary until stdin closes.
    pub(crate) metrics_hold: bool,
    /// `--store DIR`: store and forward with durable adds (SQLite mode).
    pub(crate) store: Option<PathBuf>,
    /// `--capacity N`: overrides the mode's RAM capacity.
    pub(crate) capacity: Option<usize>,
}

impl Options {
    /// Readings each sensor produces if it runs to the end (`None` when unthrottled).
    pub(crate) fn readings_per_sensor(&self) -> Option<u64> {
        if self.rate == 0 {
            return None;
        }
        #[allow(
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "rate and seconds are positive and far below 2^52"
        )]
        let n = (f64::from(self.rate) * self.duration.as_secs_f64()).round() as u64;
        Some(n)
    }
}

/// What parsing decided.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Run with these options.
    Run(Options),
    /// `--help` was given.
    Help,
    /// `--bench-store`: the store's throughput measurement.
    BenchStore,
    /// `--dump-db PATH`: print a sink database's rows.
    DumpDb(PathBuf),
}

/// Parses the arguments (without the program name).
pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut sensors = 8u32;
    let mut rate = 2000u32;
    let mut seconds = 5.0f64;
    let mut mode = Mode::Sqlite;
    let mut db = PathBuf::from("gateway.db");
    let mut fail_rate: Option<f64> = None;
    let mut malformed_rate: Option<f64> = None;
    let mut outage_ms: Option<u64> = None;
    let mut modes = Vec::new();
    let mut dead_letters = None;
    let mut seed = 42u64;
    let mut metrics_addr = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let mut metrics_hold = false;
    let mut store = None;
    let mut capacity = None;
    let mut db_given = false;

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value (see --help)"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--http" => modes.push(Mode::Http),
            "--mqtt" => modes.push(Mode::Mqtt),
            "--sensors" => sensors = number(&flag, &value(&flag)?)?,
            "--rate" => rate = number(&flag, &value(&flag)?)?,
            "--seconds" => seconds = number(&flag, &value(&flag)?)?,
            "--db" => {
                db = PathBuf::from(value(&flag)?);
                db_given = true;
            }
            "--store" => store = Some(PathBuf::from(value(&flag)?)),
            "--capacity" => capacity = Some(number(&flag, &value(&flag)?)?),
            "--bench-store" => return Ok(Parsed::BenchStore),
            "--dump-db" => return Ok(Parsed::DumpDb(PathBuf::from(value(&flag)?))),
            "--fail-rate" => fail_rate = Some(number(&flag, &value(&flag)?)?),
            "--malformed-rate" => malformed_rate = Some(number(&flag, &value(&flag)?)?),
            "--outage-ms" => outage_ms = Some(number(&flag, &value(&flag)?)?),
            "--dead-letters" => dead_letters = Some(PathBuf::from(value(&flag)?)),
            "--seed" => seed = number(&flag, &value(&flag)?)?,
            "--metrics-addr" => metrics_addr = address(&flag, &value(&flag)?)?,
            "--metrics-hold" => metrics_hold = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }

    modes.dedup();
    match modes[..] {
        [] => {}
        [m] => mode = m,
        _ => return Err("--http and --mqtt are alternatives: give one".to_owned()),
    }
    if !(1..=10_000).contains(&sensors) {
        return Err(format!("--sensors must be 1..=10000, got {sensors}"));
    }
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return Err(format!("--seconds must be in (0, 3600], got {seconds}"));
    }
    let fail_rate = fail_rate.unwrap_or(if mode == Mode::Http { 0.1 } else { 0.0 });
    if !(0.0..=1.0).contains(&fail_rate) {
        return Err(format!("--fail-rate must be in [0, 1], got {fail_rate}"));
    }
    if mode == Mode::Mqtt && fail_rate > 0.0 {
        return Err("--fail-rate does not apply to --mqtt: its failures are the broker's outage".to_owned());
    }
    let outage_ms = outage_ms.unwrap_or(if mode == Mode::Mqtt { 3000 } else { 300 });
    if store.is_some() && mode != Mode::Sqlite {
        return Err("--store is for the SQLite mode (--mqtt always spills to a store of its own)".to_owned());
    }
    if let Some(dir) = &store
        && !db_given
    {
        db = dir.join("gateway.db");
    }
    if capacity == Some(0) {
        return Err("--capacity must be at least 1".to_owned());
    }
    if metrics_hold && metrics_addr.is_none() {
        return Err("--metrics-hold needs /metrics: drop --metrics-addr off".to_owned());
    }
    Ok(Parsed::Run(Options {
        sensors,
        rate,
        duration: Duration::from_secs_f64(seconds),
        mode,
        db,
        fail_rate,
        malformed_rate: malformed_rate_for(mode, malformed_rate)?,
        outage: Duration::from_millis(outage_ms),
        dead_letters,
        seed,
        metrics_addr,
        metrics_hold,
        store,
        capacity,
    }))
}

/// `--metrics-addr`: an address with a port, or `off`.
fn address(flag: &str, text: &str) -> Result<Option<SocketAddr>, String> {
    if text == "off" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{flag}: {text:?} is not an address like 127.0.0.1:9898, or off"))
}

/// `--malformed-rate`: given or the mode's default, checked.
fn malformed_rate_for(mode: Mode, given: Option<f64>) -> Result<f64, String> {
    let rate = given.unwrap_or(if mode == Mode::Http { 0.01 } else { 0.0 });
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("--malformed-rate must be in [0, 1], got {rate}"));
    }
    if mode != Mode::Http && rate > 0.0 {
        return Err("--malformed-rate is for --http: only its collector checks readings".to_owned());
    }
    Ok(rate)
}

fn number<N: std::str::FromStr>(flag: &str, text: &str) -> Result<N, String> {
    text.parse().map_err(|_| format!("{flag}: {text:?} is not a valid number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn run(args: &[&str]) -> Options {
        match parse(args.iter().map(|s| (*s).to_owned())).unwrap() {
            Parsed::Run(o) => o,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let o = run(&[]);
        assert_eq!((o.sensors, o.rate, o.mode), (8, 2000, Mode::Sqlite));
        assert_eq!(o.readings_per_sensor(), Some(10_000));
        assert!(o.fail_rate.abs() < f64::EPSILON);
    }

    #[test]
    fn http_defaults_to_failures_and_flags_parse() {
        let o = run(&["--http", "--seconds=1", "--rate", "500", "--sensors", "2"]);
        assert_eq!(o.mode, Mode::Http);
        assert!((o.fail_rate - 0.1).abs() < f64::EPSILON);
        assert_eq!(o.readings_per_sensor(), Some(500));
        assert_eq!(o.sensors, 2);
    }

    #[test]
    fn mqtt_mode_and_its_outage_default() {
        let o = run(&["--mqtt"]);
        assert_eq!(o.mode, Mode::Mqtt);
        assert_eq!(o.outage, Duration::from_secs(3));
        assert!(o.fail_rate.abs() < f64::EPSILON);
        assert_eq!(run(&["--mqtt", "--outage-ms", "400"]).outage, Duration::from_millis(400));
        assert_eq!(run(&["--http"]).outage, Duration::from_millis(300));
        assert!(parse(["--mqtt".to_owned(), "--http".to_owned()]).is_err());
        assert!(parse(["--mqtt".to_owned(), "--fail-rate=0.1".to_owned()]).is_err());
    }

    #[test]
    fn metrics_endpoint_defaults_to_a_free_loopback_port() {
        let o = run(&[]);
        assert_eq!(o.metrics_addr, Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))));
        assert!(!o.metrics_hold);
        let o = run(&["--metrics-addr", "0.0.0.0:9898", "--metrics-hold"]);
        assert_eq!(o.metrics_addr, Some(SocketAddr::from(([0, 0, 0, 0], 9898))));
        assert!(o.metrics_hold);
        assert_eq!(run(&["--metrics-addr=off"]).metrics_addr, None);
        assert!(parse(["--metrics-addr".to_owned(), "localhost".to_owned()]).is_err());
        assert!(parse(["--metrics-addr=off".to_owned(), "--metrics-hold".to_owned()]).is_err());
    }

    #[test]
    fn store_mode_keeps_its_sink_in_the_store_directory() {
        let o = run(&["--store", "/tmp/gw"]);
        assert_eq!(o.store, Some(PathBuf::from("/tmp/gw")));
        assert_eq!(o.db, PathBuf::from("/tmp/gw/gateway.db"));
        assert_eq!(run(&["--store", "/tmp/gw", "--db", "x.db"]).db, PathBuf::from("x.db"));
        assert!(parse(["--http".to_owned(), "--store=/tmp/gw".to_owned()]).is_err());
        assert!(parse(["--mqtt".to_owned(), "--store=/tmp/gw".to_owned()]).is_err());
        assert_eq!(run(&["--capacity", "1000"]).capacity, Some(1000));
        assert!(parse(["--capacity=0".to_owned()]).is_err());
        assert!(matches!(parse(["--bench-store".to_owned()]), Ok(Parsed::BenchStore)));
        assert!(
            matches!(parse(["--dump-db".to_owned(), "a.db".to_owned()]), Ok(Parsed::DumpDb(p)) if p == Path::new("a.db"))
        );
    }

    #[test]
    fn malformed_readings_are_for_the_http_mode() {
        assert!((run(&["--http"]).malformed_rate - 0.01).abs() < f64::EPSILON);
        assert!((run(&["--http", "--malformed-rate", "0.2"]).malformed_rate - 0.2).abs() < f64::EPSILON);
        assert!(run(&[]).malformed_rate.abs() < f64::EPSILON);
        assert!(parse(["--malformed-rate=0.1".to_owned()]).is_err());
        assert!(parse(["--http".to_owned(), "--malformed-rate=2".to_owned()]).is_err());
    }

    #[test]
    fn errors_and_help() {
        assert!(parse(["--bogus".to_owned()]).is_err());
        assert!(parse(["--rate".to_owned()]).is_err());
        assert!(parse(["--fail-rate".to_owned(), "2".to_owned()]).is_err());
        assert!(matches!(parse(["-h".to_owned()]), Ok(Parsed::Help)));
    }
}
