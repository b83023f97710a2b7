//! [`DataDirLock`]: one api server per data directory.
//!
//! Two `so1s serve` on one data directory would each clear the other's uploads in progress,
//! restart the other's versions and race on the registry. The first to start takes an OS
//! file lock on `<data-dir>/so1s.lock` (`flock`, released by the kernel when the process
//! ends, however it ends) and writes its pid there; a second one is refused at once with
//! that pid.

use crate::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "so1s.lock";

/// Holds the data directory for as long as it lives.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (created if needed), or fails at once naming the
    /// process that holds it.
    pub fn acquire(data_dir: &Path) -> Result<Self> {
        let io = |context: String, source| Error::Io { context, source };
        std::fs::create_dir_all(data_dir)
            .map_err(|e| io(format!("creating {}", data_dir.display()), e))?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(format!("opening {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_owned()
                } else {
                    format!("process {holder}")
                };
                return Err(Error::Conflict(format!(
                    "{} is in use by {holder} (another so1s serve): stop it or choose \
                     another --data-dir",
                    data_dir.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(io(format!("locking {}", path.display()), e))
            }
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_all())
            .map_err(|e| io(format!("writing {}", path.display()), e))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("another so1s serve"), "{err}");
        drop(first);
        let _again = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(),
            std::process::id().to_string()
        );
    }
}
