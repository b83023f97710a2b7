//! [`FakeBuilder`]: an [`ImageBuilder`] that builds in no time, as the uploaded archive's
//! script says, and records what it was asked.

use super::record::{Calls, Gates};
use so1s_core::build::{Artifact, ImageBuilder};
use so1s_core::events::Events;
use so1s_core::store::{ByteStream, StoredVersion};
use so1s_core::{Error, Result};
use std::path::Path;

/// The gzip magic: the store takes anything that starts like an archive.
const MAGIC: &[u8] = &[0x1f, 0x8b];

/// An "archive" the store accepts and [`FakeBuilder`] follows, one directive a line:
///
/// - `wait GATE`: the build holds until [`FakeBuilder::release`]`(GATE)`;
/// - `log TEXT`: a build log line;
/// - `fail MESSAGE`: the build fails with `MESSAGE`.
///
/// Without `fail` the build succeeds. `fake_archive("")` builds at once.
pub fn fake_archive(script: &str) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(script.as_bytes());
    bytes
}

/// [`fake_archive`] as an upload body.
pub fn fake_body(script: &str) -> ByteStream {
    let bytes = bytes::Bytes::from(fake_archive(script));
    Box::pin(futures::stream::once(async move { Ok(bytes) }))
}

/// The artifact [`FakeBuilder`] makes for `model` `version`.
pub fn fake_artifact(model: &str, version: &str) -> Artifact {
    Artifact::Image {
        reference: format!("fake/{model}:{version}"),
        id: None,
        precision: None,
    }
}

/// Builds as each archive's script says. Its calls, in order: `build M V` when a build
/// starts, then `built M V` or `failed M V`; `remove REFERENCE`; `clean-up`.
#[derive(Debug, Default)]
pub struct FakeBuilder {
    calls: Calls,
    gates: Gates,
}

impl FakeBuilder {
    /// The calls so far.
    pub fn calls(&self) -> &Calls {
        &self.calls
    }

    /// Lets a build waiting at `gate` go on (or the next one to get there).
    pub fn release(&self, gate: &str) {
        self.gates.release(gate);
    }
}

#[async_trait::async_trait]
impl ImageBuilder for FakeBuilder {
    async fn build(
        &self,
        version: &StoredVersion,
        archive: &Path,
        events: &Events,
    ) -> Result<Artifact> {
        let name = format!("{} {}", version.model, version.version);
        self.calls.push(format!("build {name}"));
        let bytes = std::fs::read(archive).map_err(|source| Error::Io {
            context: format!("reading {}", archive.display()),
            source,
        })?;
        let script = String::from_utf8_lossy(bytes.strip_prefix(MAGIC).unwrap_or(&bytes));
        events.progress(format!("fake build of {name}"));
        for line in script.lines() {
            let (directive, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
            match directive {
                "wait" => self.gates.pass(rest).await,
                "log" => events.log(rest),
                "fail" => {
                    self.calls.push(format!("failed {name}"));
                    return Err(Error::Backend(rest.to_owned()));
                }
                _ => {}
            }
        }
        self.calls.push(format!("built {name}"));
        Ok(fake_artifact(
            version.model.as_str(),
            &version.version.to_string(),
        ))
    }

    async fn remove(&self, artifact: &Artifact) -> Result<()> {
        let what = match artifact {
            Artifact::Image { reference, .. } => reference.clone(),
            Artifact::Bundle { dir, .. } => dir.display().to_string(),
        };
        self.calls.push(format!("remove {what}"));
        Ok(())
    }

    async fn clean_up(&self) -> Result<usize> {
        self.calls.push("clean-up");
        Ok(0)
    }
}
