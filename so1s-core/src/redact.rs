//! What clients may read of an error: no absolute paths of the host.
//!
//! Error chains name the files they failed on, which is what the server's log wants. What
//! goes back to a client (error bodies, a version's error, its events) has its host paths
//! shortened: a path under the data directory becomes `<data-dir>/...`, any other absolute
//! path whose top folder exists on this host becomes `…/<file name>`. URL paths
//! (`/v1/models`, `/inference/...`) are left alone: their top folder is not on the host.

use std::path::{Path, PathBuf};

/// Shortens host paths in messages.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Roots replaced by a label, longest first.
    roots: Vec<(String, &'static str)>,
}

impl Redactor {
    /// A redactor that also names paths under `data_dir` as `<data-dir>/...`.
    pub fn with_data_dir(data_dir: &Path) -> Self {
        let mut roots = Vec::new();
        let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        let canonical = data_dir.canonicalize().unwrap_or_else(|_| absolute.clone());
        for root in [absolute, canonical] {
            let root = root.to_string_lossy().trim_end_matches('/').to_owned();
            if root.len() > 1 && !roots.iter().any(|(r, _)| *r == root) {
                roots.push((root, "<data-dir>"));
            }
        }
        roots.sort_by_key(|(root, _)| std::cmp::Reverse(root.len()));
        Self { roots }
    }

    /// `text` with its host paths shortened.
    pub fn redact(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = next_path_start(rest) {
            out.push_str(&rest[..start]);
            let path_text = &rest[start..];
            let end = path_text
                .find(|c: char| c.is_whitespace() || "'\"`()[]{},;<>".contains(c))
                .unwrap_or(path_text.len());
            // A trailing ':' or '.' ends a sentence or a chain link, not the path.
            let path = path_text[..end].trim_end_matches([':', '.']);
            out.push_str(&self.shorten(path));
            rest = &path_text[path.len()..];
        }
        out.push_str(rest);
        out
    }

    fn shorten(&self, path: &str) -> String {
        for (root, label) in &self.roots {
            if let Some(below) = path.strip_prefix(root.as_str()) {
                if below.is_empty() || below.starts_with('/') {
                    return format!("{label}{below}");
                }
            }
        }
        let top = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let on_host = !top.is_empty() && Path::new("/").join(top).exists();
        if !on_host || path.matches('/').count() < 2 {
            return path.to_owned();
        }
        let name = PathBuf::from(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("…/{name}")
    }
}

/// Where the next absolute path begins: a `/` at the start or after a blank, a quote, a
/// bracket or `=`, and not `//` (URLs).
fn next_path_start(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find(|&i| {
        bytes[i] == b'/'
            && bytes
                .get(i + 1)
                .is_some_and(|&c| c != b'/' && !c.is_ascii_whitespace())
            && (i == 0 || b" \t\n'\"`([{=".contains(&bytes[i - 1]))
    })
}

/// Shortens host paths with no data directory known.
pub fn host_paths(text: &str) -> String {
    Redactor::default().redact(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_paths_become_relative_and_other_host_paths_lose_their_folders() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let redactor = Redactor::with_data_dir(&data);
        let text = format!(
            "reading {}/bundles/m/v1/config.json: No such file (os error 2); also `{}`",
            data.display(),
            dir.path().join("elsewhere/x.bin").display()
        );
        let redacted = redactor.redact(&text);
        assert_eq!(
            redacted,
            "reading <data-dir>/bundles/m/v1/config.json: No such file (os error 2); also `…/x.bin`"
        );
        assert!(!redacted.contains(&dir.path().display().to_string()));
    }

    #[test]
    fn urls_routes_and_prose_are_left_alone() {
        for text in [
            "upload one to /v1/models/{name}/versions",
            "error sending request for url (http://127.0.0.1:8080/predict)",
            "1/2 steps done, ratio 3/4",
            "POST /inference/predict",
        ] {
            assert_eq!(host_paths(text), text);
        }
        assert_eq!(
            host_paths("starting /usr/bin/env failed."),
            "starting …/env failed."
        );
    }
}
