//! Small process helpers shared by every xtask command.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What an xtask step returns: a message for the user on failure.
pub(crate) type Result<T = ()> = std::result::Result<T, String>;

/// The workspace root (the parent of `xtask/`).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Prints a command the way a person would type it, runs it, and fails on a non-zero exit.
pub(crate) fn run(cmd: &mut Command) -> Result {
    eprintln!("$ {}", show(cmd));
    let status = cmd.status().map_err(|e| format!("could not start `{}`: {e}", show(cmd)))?;
    if status.success() { Ok(()) } else { Err(format!("`{}` failed with {status}", show(cmd))) }
}

/// Like [`run`] but captures standard output.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| format!("could not start `{}`: {e}", show(cmd)))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`{}` failed with {}: {}", show(cmd), out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// `cargo` from the environment cargo gave us, with `dir` as working directory.
pub(crate) fn cargo(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir);
    cmd
}

/// Whether a program is on `PATH`.
pub(crate) fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command, echoing its standard output as it arrives, and returns that output.
pub(crate) fn run_tee(cmd: &mut Command) -> Result<String> {
    use std::io::{BufRead, BufReader, Write};
    eprintln!("$ {}", show(cmd));
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start `{}`: {e}", show(cmd)))?;
    let mut captured = String::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.map_err(|e| format!("reading output: {e}"))?;
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            captured.push_str(&line);
            captured.push('\n');
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for `{}`: {e}", show(cmd)))?;
    if status.success() { Ok(captured) } else { Err(format!("`{}` failed with {status}", show(cmd))) }
}

/// Whether this process runs as root.
fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

/// Installs a Debian package, running `apt-get update` first; tries a second time on failure,
/// which has been seen to clear a transient "pkgProblemResolver ... breaks".
pub(crate) fn apt_install(package: &str) -> Result {
    if !have("apt-get") {
        return Err(format!("{package} is missing and apt-get is not available: install it by hand"));
    }
    let script = format!("apt-get update && apt-get install -y --no-install-recommends {package}");
    let sudo = !is_root() && have("sudo");
    let attempt = || {
        let mut cmd = if sudo {
            let mut cmd = Command::new("sudo");
            cmd.arg("env");
            cmd
        } else {
            Command::new("env")
        };
        cmd.args(["DEBIAN_FRONTEND=noninteractive", "sh", "-c", &script]);
        run(&mut cmd)
    };
    attempt()
        .or_else(|first| {
            eprintln!("{first}; trying once more");
            attempt()
        })
        .map_err(|e| format!("could not install {package} with apt-get: {e}"))
}

/// Installs the Debian `package` that provides `program` unless `program` is on `PATH` or in
/// `/usr/sbin` (where Debian puts daemons such as `mosquitto`, off a normal user's `PATH`).
pub(crate) fn ensure_installed(program: &str, package: &str) -> Result {
    if have(program) || Path::new("/usr/sbin").join(program).is_file() {
        return Ok(());
    }
    apt_install(package)
}
