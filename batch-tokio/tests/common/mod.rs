//! Helpers shared by the store tests.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

/// A directory of its own under the system's temp dir, removed at the end.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `batch-<name>-<pid>`, empty.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("batch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    /// The store file inside it.
    pub fn file(&self) -> PathBuf {
        self.0.join("store.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
