//! Copying files out of and into a container as tar archives (Docker's archive API),
//! for Zun's `get_archive` / `put_archive` (`openstack appcontainer cp`).
//!
//! An archive travels in one command reply (or one command), so it is capped at
//! [`MAX_ARCHIVE_BYTES`]; base64 on the wire keeps it well inside a relay message.

use berth_proto::{AgentError, AgentErrorKind, Outcome, Reply};
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt as _;
use serde_json::json;
use uuid::Uuid;

use super::errors::{classify, is_not_found};
use super::Runtime;

/// Largest archive copied in either direction.
pub const MAX_ARCHIVE_BYTES: usize = 8 << 20;

impl Runtime {
    /// A tar archive of `path` in the container, with the path's stat read from the
    /// archive's first entry.
    pub(super) async fn get_archive(&self, container: Uuid, path: &str) -> Reply {
        self.require(container).await?;
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut stream = self
            .docker
            .download_from_container(&berth_proto::docker_name(container), Some(options));
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|err| self.copy_error("copy from", container, "file", path, &err))?;
            if data.len() + chunk.len() > MAX_ARCHIVE_BYTES {
                return Err(AgentError::new(
                    AgentErrorKind::Conflict,
                    format!(
                        "{path} in container {container} is larger than {} MiB as a tar \
                         archive; copy a smaller path",
                        MAX_ARCHIVE_BYTES >> 20
                    ),
                ));
            }
            data.extend_from_slice(&chunk);
        }
        let stat = first_entry_stat(&data).unwrap_or_else(|| {
            json!({"name": base_name(path), "size": 0, "mode": 0, "mtime": "", "linkTarget": ""})
        });
        Ok(Outcome::Archive { data, stat })
    }

    /// Extracts a tar archive into the directory `path` of the container.
    pub(super) async fn put_archive(&self, container: Uuid, path: &str, data: Vec<u8>) -> Reply {
        if data.len() > MAX_ARCHIVE_BYTES {
            return Err(AgentError::new(
                AgentErrorKind::Conflict,
                format!(
                    "the archive is larger than {} MiB; copy less at a time",
                    MAX_ARCHIVE_BYTES >> 20
                ),
            ));
        }
        self.require(container).await?;
        let options = UploadToContainerOptionsBuilder::new().path(path).build();
        self.docker
            .upload_to_container(
                &berth_proto::docker_name(container),
                Some(options),
                bollard::body_full(data.into()),
            )
            .await
            .map_err(|err| self.copy_error("copy into", container, "directory", path, &err))?;
        Ok(Outcome::Done)
    }

    /// The error of a copy (`action`): the engine's 404 means the `kind` (file or
    /// directory) at `path` is missing; anything else is classified as usual.
    fn copy_error(
        &self,
        action: &str,
        container: Uuid,
        kind: &str,
        path: &str,
        err: &bollard::errors::Error,
    ) -> AgentError {
        if is_not_found(err) {
            AgentError::new(
                AgentErrorKind::NotFound,
                format!("Could not find the {kind} {path} in container {container}"),
            )
        } else {
            classify(action, container, self.instance, err)
        }
    }
}

fn base_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("/")
}

/// A numeric field of a tar header: octal text, NUL/space padded.
fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn text(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Docker's path stat (`name`, `size`, `mode` as Go's `os.FileMode`, `mtime`,
/// `linkTarget`) of the archive's first entry, the path itself. `None` when the
/// archive does not start with a ustar header.
pub(crate) fn first_entry_stat(tar: &[u8]) -> Option<serde_json::Value> {
    let header = tar.get(..512)?;
    if header.iter().all(|b| *b == 0) {
        return None;
    }
    let name = text(&header[0..100]);
    let mode = octal(&header[100..108])?;
    let size = octal(&header[124..136])?;
    let mtime = octal(&header[136..148])?;
    let kind = header[156];
    let link = text(&header[157..257]);
    // Go's FileMode type bits.
    let type_bits: u64 = match kind {
        b'5' => 1 << 31,
        b'2' => 1 << 27,
        _ => 0,
    };
    let mtime = chrono::DateTime::from_timestamp(i64::try_from(mtime).ok()?, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    Some(json!({
        "name": base_name(&name),
        "size": size,
        "mode": (mode & 0o7777) | type_bits,
        "mtime": mtime,
        "linkTarget": link,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, mode: &str, size: &str, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..100 + mode.len()].copy_from_slice(mode.as_bytes());
        h[124..124 + size.len()].copy_from_slice(size.as_bytes());
        h[136..147].copy_from_slice(b"14000000000");
        h[156] = kind;
        h
    }

    #[test]
    fn the_stat_of_a_file_comes_from_its_header() {
        let stat = first_entry_stat(&header("hosts", "0000644", "00000000012", b'0')).unwrap();
        assert_eq!(stat["name"], "hosts");
        assert_eq!(stat["size"], 10);
        assert_eq!(stat["mode"], 0o644);
        assert!(stat["mtime"].as_str().unwrap().starts_with("2021-01-14"));
    }

    #[test]
    fn a_directory_has_go_s_directory_bit() {
        let stat = first_entry_stat(&header("etc/", "0000755", "0", b'5')).unwrap();
        assert_eq!(stat["name"], "etc");
        assert_eq!(stat["mode"], (1u64 << 31) | 0o755);
    }

    #[test]
    fn no_header_no_stat() {
        assert!(first_entry_stat(&[]).is_none());
        assert!(first_entry_stat(&[0u8; 1024]).is_none());
    }
}
