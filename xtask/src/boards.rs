//! `boards`: builds the real-board firmware (`examples/stm32f411`, `examples/esp32c3`) in release
//! mode from their lock files. Nothing runs them: QEMU does not emulate these chips' clocks.

use std::path::PathBuf;

use crate::qemu::rustup_target;
use crate::util::{Result, cargo, root, run};

/// A firmware package for a real board.
struct Board {
    /// The package folder under `examples/`.
    dir: &'static str,
    /// Its Rust target (also set in its `.cargo/config.toml`).
    target: &'static str,
}

/// Every real-board firmware, in build order.
const BOARDS: [Board; 2] = [
    Board { dir: "stm32f411", target: "thumbv7em-none-eabihf" },
    Board { dir: "esp32c3", target: "riscv32imc-unknown-none-elf" },
];

/// The package folder of `board`.
fn board_dir(board: &Board) -> PathBuf {
    root().join("examples").join(board.dir)
}

/// Adds the boards' rustup targets and builds each board's firmware with `--release --locked`.
pub(crate) fn boards() -> Result {
    for board in &BOARDS {
        rustup_target(board.target)?;
    }
    for board in &BOARDS {
        let dir = board_dir(board);
        let mut build = cargo(&dir);
        build
            .args(["build", "--release", "--locked", "--target", board.target])
            .arg("--target-dir")
            .arg(dir.join("target"))
            // Flags meant for host builds would replace the firmware's linker scripts.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS");
        run(&mut build).map_err(|e| format!("{} firmware: {e}", board.dir))?;
    }
    Ok(())
}
