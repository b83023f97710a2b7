//! Build contexts on the wire: the [`ContextEntry`] list of [`image`](super::image) written as
//! a tar stream on a blocking thread, chunk by chunk (a runtime context is over 600 MB; it is
//! never held in memory or written to disk), and a fingerprint of its content.

use super::image::{ContextEntry, Source};
use crate::store::{read_chunks, ByteStream};
use crate::{Error, Result};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use tokio::sync::mpsc;

const CHUNK: usize = 256 * 1024;

/// The entries as a tar stream. Headers are deterministic (owner root, a fixed mtime), so
/// the same files make the same context.
pub fn tar_stream(entries: Vec<ContextEntry>) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let writer = ChunkWriter {
            tx: tx.clone(),
            buffer: Vec::with_capacity(CHUNK),
        };
        if let Err(e) = write_tar(writer, &entries) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

fn write_tar(writer: ChunkWriter, entries: &[ContextEntry]) -> io::Result<()> {
    let mut tar = tar::Builder::new(writer);
    tar.mode(tar::HeaderMode::Deterministic);
    // Plain entries only: the legacy builder refuses GNU sparse headers.
    tar.sparse(false);
    for entry in entries {
        match &entry.source {
            Source::Text(text) => {
                let mut header = tar::Header::new_gnu();
                header.set_size(text.len() as u64);
                header.set_mode(0o644);
                header.set_mtime(0);
                tar.append_data(&mut header, &entry.path, text.as_bytes())?;
            }
            Source::File(path) => tar
                .append_path_with_name(path, &entry.path)
                .map_err(|e| with_path(e, path))?,
            Source::Tree(dir) => tar
                .append_dir_all(&entry.path, dir)
                .map_err(|e| with_path(e, dir))?,
            Source::Dir(mode) => {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_mode(*mode);
                header.set_mtime(0);
                tar.append_data(&mut header, &entry.path, io::empty())?;
            }
        }
    }
    tar.into_inner()?.flush()
}

fn with_path(error: io::Error, path: &std::path::Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// Sends what is written in chunks to the stream's receiver.
struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the engine stopped reading"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// sha256 over every entry's path and content: equal fingerprints, equal images.
pub async fn fingerprint(entries: Vec<ContextEntry>) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        for entry in &entries {
            hasher.update(entry.path.as_bytes());
            hasher.update([0]);
            match &entry.source {
                Source::Text(text) => hasher.update(text.as_bytes()),
                Source::Dir(mode) => hasher.update(mode.to_le_bytes()),
                Source::File(path) => read_chunks(path, |chunk| hasher.update(chunk))?,
                Source::Tree(dir) => {
                    return Err(Error::Backend(format!(
                        "{} is a whole directory; fingerprints cover files",
                        dir.display()
                    )))
                }
            }
            hasher.update([0]);
        }
        Ok(format!("{:x}", hasher.finalize()))
    })
    .await
    .map_err(|e| Error::Backend(format!("fingerprinting the runtime files panicked: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::io::Read;
    use std::path::PathBuf;

    fn entries(dir: &std::path::Path) -> Vec<ContextEntry> {
        std::fs::write(dir.join("bin"), vec![7u8; 600_000]).unwrap();
        std::fs::create_dir_all(dir.join("model/1_Pooling")).unwrap();
        std::fs::write(dir.join("model/config.json"), b"{}").unwrap();
        std::fs::write(dir.join("model/1_Pooling/config.json"), b"{}").unwrap();
        vec![
            ContextEntry {
                path: "Dockerfile".into(),
                source: Source::Text("FROM scratch\n".into()),
            },
            ContextEntry {
                path: "rootfs/tmp".into(),
                source: Source::Dir(0o1777),
            },
            ContextEntry {
                path: "rootfs/so1s/bin/x".into(),
                source: Source::File(dir.join("bin")),
            },
            ContextEntry {
                path: "model".into(),
                source: Source::Tree(dir.join("model")),
            },
        ]
    }

    async fn collect(stream: ByteStream) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(bytes)
    }

    #[tokio::test]
    async fn the_stream_is_a_tar_of_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = collect(tar_stream(entries(dir.path()))).await.unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path: PathBuf = entry.path().unwrap().into_owned();
            let header = entry.header();
            let (mode, kind, size) = (
                header.mode().unwrap(),
                header.entry_type(),
                header.size().unwrap(),
            );
            if path == std::path::Path::new("Dockerfile") {
                let mut text = String::new();
                entry.read_to_string(&mut text).unwrap();
                assert_eq!(text, "FROM scratch\n");
            }
            if path == std::path::Path::new("rootfs/tmp") {
                assert!(kind.is_dir());
                assert_eq!(mode & 0o7777, 0o1777);
            }
            if path == std::path::Path::new("rootfs/so1s/bin/x") {
                assert_eq!(size, 600_000, "bigger than one chunk, whole");
            }
            seen.push(path.display().to_string());
        }
        for expected in [
            "Dockerfile",
            "rootfs/tmp",
            "rootfs/so1s/bin/x",
            "model/config.json",
            "model/1_Pooling/config.json",
        ] {
            assert!(seen.iter().any(|p| p == expected), "{expected} in {seen:?}");
        }
    }

    #[tokio::test]
    async fn a_missing_file_ends_the_stream_with_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut list = entries(dir.path());
        list.push(ContextEntry {
            path: "rootfs/so1s/lib/libgone.so".into(),
            source: Source::File(dir.path().join("libgone.so")),
        });
        let error = collect(tar_stream(list)).await.unwrap_err();
        assert!(error.to_string().contains("libgone.so"), "{error}");
    }

    #[tokio::test]
    async fn fingerprints_change_with_content_only() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<ContextEntry> = entries(dir.path())
            .into_iter()
            .filter(|e| !matches!(e.source, Source::Tree(_)))
            .collect();
        let first = fingerprint(files.clone()).await.unwrap();
        assert_eq!(first, fingerprint(files.clone()).await.unwrap());
        assert_eq!(first.len(), 64);
        std::fs::write(dir.path().join("bin"), vec![8u8; 600_000]).unwrap();
        assert_ne!(first, fingerprint(files).await.unwrap());
    }
}
