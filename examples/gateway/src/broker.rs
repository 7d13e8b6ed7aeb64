//! The MQTT mode's broker: a private Mosquitto process on a free loopback port, with its own
//! config file in a temporary directory, and the scheduled outage that stops it mid-run.
//!
//! It never touches a system broker (Debian's package may start one on port 1883): the port is
//! picked free, the listener is bound to 127.0.0.1 only, and nothing under /etc is read.
//!
//! The broker keeps its sessions across the outage (`persistence true`, saved when it stops on
//! SIGTERM): without that, the restarted broker would forget the subscriber's subscription, and
//! whatever the gateway published before the subscriber had subscribed again would be
//! acknowledged (PUBACK) and then routed to nobody. That loss would be the broker's, not the
//! gateway's; persistent sessions are how a production broker avoids it.

use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use batch_tokio::handler::BoxError;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::report::dur;

/// How long the broker gets to open its port after being started.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long it gets to save its sessions and exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running (or stopped, during the outage) Mosquitto broker.
#[derive(Debug)]
pub(crate) struct Broker {
    program: PathBuf,
    version: String,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    /// Finds `mosquitto`, writes its config into a fresh temporary directory, starts it on a
    /// free port of 127.0.0.1 and waits until it accepts connections.
    pub(crate) async fn start() -> Result<Self, BoxError> {
        let program = find_program().ok_or(
            "mosquitto not found on PATH or in /usr/sbin: install it (Debian: apt-get install mosquitto; \
             `cargo xtask test` does this on a fresh machine)",
        )?;
        let version = version(&program).await;
        let dir = std::env::temp_dir().join(format!("gateway-mosquitto-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let port = free_port()?;
        let mut broker = Self { program, version, dir, port, child: None };
        std::fs::write(broker.config_path(), broker.config())?;
        broker.launch().await?;
        Ok(broker)
    }

    /// The port it listens on (127.0.0.1 only).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Its version and address, e.g. "mosquitto 2.0.11 at 127.0.0.1:40123".
    pub(crate) fn describe(&self) -> String {
        format!("{} at 127.0.0.1:{}", self.version, self.port)
    }

    /// Its private directory (config file, log, saved sessions).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops it with SIGTERM (it saves its sessions and exits), or SIGKILL after
    /// [`STOP_TIMEOUT`]. Returns how long it took to exit.
    pub(crate) async fn stop(&mut self) -> Result<Duration, BoxError> {
        let Some(mut child) = self.child.take() else { return Ok(Duration::ZERO) };
        let started = Instant::now();
        if let Some(pid) = child.id() {
            // The shell's builtin `kill`: no libc call (and no unsafe) in the demo.
            let _ = Command::new("sh").args(["-c", &format!("kill -TERM {pid}")]).status().await;
        }
        if tokio::time::timeout(STOP_TIMEOUT, child.wait()).await.is_err() {
            tracing::warn!("mosquitto did not exit {} after SIGTERM: killing it", dur(STOP_TIMEOUT));
            child.kill().await?;
        }
        Ok(started.elapsed())
    }

    /// Starts it again on the same port, with the same config and saved sessions.
    pub(crate) async fn restart(&mut self) -> Result<(), BoxError> {
        self.launch().await
    }

    /// Stops it for good and removes its directory.
    pub(crate) async fn shutdown(mut self) {
        if let Err(e) = self.stop().await {
            tracing::warn!(error = %e, "stopping mosquitto");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("mosquitto.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("mosquitto.log")
    }

    /// The whole configuration: nothing is inherited from /etc/mosquitto.
    fn config(&self) -> String {
        let dir = self.dir.display();
        // Started as root, mosquitto would switch to the `mosquitto` user and then fail to
        // write its files here; as another user the option has no effect.
        let user = match std::fs::metadata(&self.dir) {
            Ok(m) if m.uid() == 0 => "user root\n",
            _ => "",
        };
        format!(
            "# Written by the gateway demo for one run.\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence true\n\
             persistence_location {dir}/\n\
             max_queued_messages 0\n\
             log_dest file {dir}/mosquitto.log\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             {user}",
            port = self.port
        )
    }

    /// Spawns the process and waits until its port accepts connections.
    async fn launch(&mut self) -> Result<(), BoxError> {
        let mut child = Command::new(&self.program)
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A process group of its own: Ctrl-C in a terminal signals the whole foreground
            // group, and the broker must outlive the gateway's drain.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.program.display()))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(format!(
                    "mosquitto exited ({status}) before listening on port {}; its log:\n{}",
                    self.port,
                    log_tail(&self.log_path())
                )
                .into());
            }
            if tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).await.is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "mosquitto did not listen on port {} within {}; its log:\n{}",
                    self.port,
                    dur(READY_TIMEOUT),
                    log_tail(&self.log_path())
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // `kill_on_drop` ends the process (if it still runs); the files go with it.
        self.child = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `mosquitto` on PATH, else in the sbin directories (not on a normal user's PATH).
fn find_program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("mosquitto"))
        .find(|p| p.is_file())
}

/// "mosquitto 2.0.11", from `mosquitto -h` (which exits non-zero).
async fn version(program: &Path) -> String {
    let out = Command::new(program).arg("-h").stdin(Stdio::null()).output().await;
    out.ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines().find_map(|l| l.strip_prefix("mosquitto version ").map(|v| format!("mosquitto {v}")))
        })
        .unwrap_or_else(|| "mosquitto".to_owned())
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// The last lines of the broker's log, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    if tail.is_empty() { format!("(nothing in {})", path.display()) } else { tail }
}

/// The outage as it happened, in time since the run started.
#[derive(Debug, Clone, Default)]
pub(crate) struct OutageReport {
    /// When the broker was stopped (SIGTERM sent).
    pub(crate) stopped_at: Option<Duration>,
    /// How long it took to exit.
    pub(crate) exit_took: Duration,
    /// When it accepted connections again.
    pub(crate) back_at: Option<Duration>,
    /// What went wrong, if anything.
    pub(crate) error: Option<String>,
}

impl OutageReport {
    /// From SIGTERM to listening again.
    pub(crate) fn length(&self) -> Option<Duration> {
        self.back_at?.checked_sub(self.stopped_at?)
    }
}

/// Stops the broker `at` after `start` and starts it again `length` later. An outage that has
/// not begun when `cancel` turns true is skipped; one under way always ends with a restart.
/// Returns the broker with what happened.
pub(crate) fn schedule_outage(
    mut broker: Broker,
    start: Instant,
    at: Duration,
    length: Duration,
    mut cancel: watch::Receiver<bool>,
) -> JoinHandle<(Broker, OutageReport)> {
    tokio::spawn(async move {
        let mut report = OutageReport::default();
        tokio::select! {
            () = tokio::time::sleep_until((start + at).into()) => {}
            _ = cancel.wait_for(|c| *c) => return (broker, report),
        }
        crate::mqtt::announce(start, &format!("outage: stopping the broker (SIGTERM) for {}", dur(length)));
        report.stopped_at = Some(start.elapsed());
        match broker.stop().await {
            Ok(took) => report.exit_took = took,
            Err(e) => report.error = Some(format!("stopping the broker: {e}")),
        }
        tokio::time::sleep(length).await;
        match broker.restart().await {
            Ok(()) => {
                report.back_at = Some(start.elapsed());
                crate::mqtt::announce(start, "outage over: broker listening again on the same port");
            }
            Err(e) => report.error = Some(format!("restarting the broker: {e}")),
        }
        (broker, report)
    })
}
