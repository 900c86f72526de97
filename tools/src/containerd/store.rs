//! Storing a new image: its blobs into the content store (streaming writes
//! under a lease, with the garbage-collection labels that tie them together),
//! then the image record pointing at the manifest.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use containerd_client::services::v1::{
    AddResourceRequest, CreateImageRequest, Image, Info, InfoRequest, Resource, UpdateImageRequest,
    UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor;
use prost_types::FieldMask;

use super::lease::Lease;
use super::{Client, ContainerdError};
use crate::oci::{Content, NewImage};

/// Bytes per write message (containerd accepts messages of up to 16 MiB).
/// The blob is read one chunk at a time as the stream is sent, so a write
/// holds a few chunks in memory, whatever the blob's size.
const CHUNK: usize = 1 << 20;

impl Client {
    /// Stores `image` as image `name` (replacing the target of an existing
    /// image of that name).
    ///
    /// Under a lease, writes layer, config and manifest into the content
    /// store (blobs already present are only added to the lease), the
    /// manifest labelled `containerd.io/gc.ref.content.config` and
    /// `containerd.io/gc.ref.content.l.0` so that the image keeps its config
    /// and layer alive; then creates (or updates) the image record and
    /// deletes the lease. The image is not unpacked: `ctr run` unpacks it, or
    /// `ctr images unpack --snapshotter S NAME`.
    pub async fn store_image<L: Content>(
        &self,
        name: &str,
        image: &NewImage<L>,
    ) -> Result<(), ContainerdError> {
        let lease = self.create_lease().await?;
        let result = self.store_under(name, image, &lease).await;
        self.delete_lease(lease).await;
        result
    }

    async fn store_under<L: Content>(
        &self,
        name: &str,
        image: &NewImage<L>,
        lease: &Lease,
    ) -> Result<(), ContainerdError> {
        let manifest_labels = HashMap::from([
            (
                "containerd.io/gc.ref.content.config".to_string(),
                image.config.digest.to_string(),
            ),
            (
                "containerd.io/gc.ref.content.l.0".to_string(),
                image.layer.digest().to_string(),
            ),
        ]);
        self.put_blob(&image.layer, HashMap::new(), lease).await?;
        self.put_blob(&image.config, HashMap::new(), lease).await?;
        self.put_blob(&image.manifest, manifest_labels, lease)
            .await?;
        let record = Image {
            name: name.to_string(),
            labels: HashMap::new(),
            target: Some(Descriptor {
                media_type: image.manifest.media_type.to_string(),
                digest: image.manifest.digest.to_string(),
                size: image.manifest.bytes.len() as i64,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let request = self.request(
            CreateImageRequest {
                image: Some(record.clone()),
                source_date_epoch: None,
            },
            Some(lease),
        );
        match self.images().create(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                // No field mask: the record is replaced whole (its creation time stays).
                let request = self.request(
                    UpdateImageRequest {
                        image: Some(record),
                        update_mask: None,
                        source_date_epoch: None,
                    },
                    Some(lease),
                );
                self.images()
                    .update(request)
                    .await
                    .map(|_| ())
                    .map_err(|status| self.grpc(format!("update image {name}"), status))
            }
            Err(status) => Err(self.grpc(format!("create image {name}"), status)),
        }
    }

    /// Puts `blob` into the content store with `labels`, unless it is there
    /// already: then it is added to the lease and given the missing labels.
    async fn put_blob(
        &self,
        blob: &dyn Content,
        labels: HashMap<String, String>,
        lease: &Lease,
    ) -> Result<(), ContainerdError> {
        let digest = blob.digest().to_string();
        let request = self.request(
            InfoRequest {
                digest: digest.clone(),
            },
            None,
        );
        let present = match self.content().info(request).await {
            Ok(response) => response.into_inner().info,
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(self.grpc(format!("stat blob {}", digest), status)),
        };
        if present.is_none() {
            match self.write_blob(blob, labels.clone(), lease).await {
                Ok(()) => return Ok(()),
                // Written meanwhile by someone else: treat as present.
                Err(ContainerdError::Grpc {
                    code: Code::AlreadyExists,
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        tracing::debug!(digest = %digest, "blob already in the content store");
        let request = self.request(
            AddResourceRequest {
                id: lease.id.clone(),
                resource: Some(Resource {
                    id: digest.clone(),
                    r#type: "content".into(),
                }),
            },
            None,
        );
        self.leases()
            .add_resource(request)
            .await
            .map_err(|status| self.grpc(format!("lease blob {}", digest), status))?;
        let missing: Vec<String> = labels
            .iter()
            .filter(|(k, v)| present.as_ref().and_then(|i| i.labels.get(*k)) != Some(*v))
            .map(|(k, _)| format!("labels.{k}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let request = self.request(
            UpdateRequest {
                info: Some(Info {
                    digest: digest.clone(),
                    labels,
                    ..Info::default()
                }),
                update_mask: Some(FieldMask { paths: missing }),
            },
            Some(lease),
        );
        self.content()
            .update(request)
            .await
            .map(|_| ())
            .map_err(|status| self.grpc(format!("label blob {}", digest), status))
    }

    /// Writes `blob` with the Content Write stream: write messages of
    /// [`CHUNK`] bytes at increasing offsets, the first one announcing the
    /// total size and expected digest, then a commit carrying `labels`. The
    /// messages are made as the stream is sent, one chunk read at a time.
    async fn write_blob(
        &self,
        blob: &dyn Content,
        labels: HashMap<String, String>,
        lease: &Lease,
    ) -> Result<(), ContainerdError> {
        let digest = blob.digest().to_string();
        let write_error = |reason: String| ContainerdError::Write {
            digest: blob.digest().clone(),
            reason,
        };
        let total = i64::try_from(blob.size())
            .map_err(|_| write_error(format!("{} bytes is too large", blob.size())))?;
        let reader = blob
            .reader()
            .map_err(|e| write_error(format!("cannot read the blob: {e}")))?;
        let read_failure = Arc::new(Mutex::new(None));
        let messages = WriteMessages {
            reader,
            reference: format!("pare-compact-{digest}"),
            digest: digest.clone(),
            total,
            offset: 0,
            labels: Some(labels),
            failure: Arc::clone(&read_failure),
        };
        let op = || format!("write blob {digest}");
        let request = self.request(tokio_stream::iter(messages), Some(lease));
        let responses = self.content().write(request).await;
        let failed_read = || {
            read_failure
                .lock()
                .ok()
                .and_then(|mut f| f.take())
                .map(|e: std::io::Error| write_error(format!("cannot read the blob: {e}")))
        };
        let mut responses = match responses {
            Ok(responses) => responses.into_inner(),
            Err(status) => return Err(failed_read().unwrap_or_else(|| self.grpc(op(), status))),
        };
        let mut committed = None;
        loop {
            match responses.message().await {
                Ok(Some(response)) => {
                    if response.action == WriteAction::Commit as i32 {
                        committed = Some(response);
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    return Err(failed_read().unwrap_or_else(|| self.grpc(op(), status)));
                }
            }
        }
        if let Some(e) = failed_read() {
            return Err(e);
        }
        let committed = committed.ok_or_else(|| write_error("containerd sent no commit".into()))?;
        if committed.digest != digest || committed.offset != total {
            return Err(write_error(format!(
                "containerd committed {} bytes as {}",
                committed.offset, committed.digest
            )));
        }
        tracing::debug!(%digest, size = total, "blob written");
        Ok(())
    }
}

/// The messages of one content write, made lazily: a write message per
/// chunk read from the blob, then the commit. gRPC polls for the next message
/// only when the connection can take it (HTTP/2 flow control), so a few
/// chunks are in memory at a time; the read is a local file's, done on the
/// runtime's thread. A read error ends the stream without a commit and is
/// left in `failure`.
struct WriteMessages {
    reader: Box<dyn Read + Send>,
    reference: String,
    digest: String,
    total: i64,
    offset: i64,
    /// Taken by the commit message.
    labels: Option<HashMap<String, String>>,
    failure: Arc<Mutex<Option<std::io::Error>>>,
}

impl WriteMessages {
    fn message(&self, action: WriteAction, data: Vec<u8>) -> WriteContentRequest {
        WriteContentRequest {
            action: action as i32,
            r#ref: self.reference.clone(),
            total: self.total,
            expected: self.digest.clone(),
            offset: self.offset,
            data,
            labels: HashMap::new(),
        }
    }

    fn fail(&mut self, error: std::io::Error) -> Option<WriteContentRequest> {
        if let Ok(mut failure) = self.failure.lock() {
            *failure = Some(error);
        }
        self.labels = None;
        None
    }
}

impl Iterator for WriteMessages {
    type Item = WriteContentRequest;

    fn next(&mut self) -> Option<WriteContentRequest> {
        self.labels.as_ref()?;
        if self.offset < self.total {
            let want = (self.total - self.offset).min(CHUNK as i64) as usize;
            let mut data = Vec::with_capacity(want);
            match (&mut self.reader).take(want as u64).read_to_end(&mut data) {
                Ok(n) if n == want => {}
                Ok(n) => {
                    let short = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "it ended at {} of {} bytes",
                            self.offset + n as i64,
                            self.total
                        ),
                    );
                    return self.fail(short);
                }
                Err(e) => return self.fail(e),
            }
            let message = self.message(WriteAction::Write, data);
            self.offset += want as i64;
            return Some(message);
        }
        let mut commit = self.message(WriteAction::Commit, Vec::new());
        commit.labels = self.labels.take().unwrap_or_default();
        Some(commit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(
        reader: Box<dyn Read + Send>,
        total: i64,
    ) -> (WriteMessages, Arc<Mutex<Option<std::io::Error>>>) {
        let failure = Arc::new(Mutex::new(None));
        let messages = WriteMessages {
            reader,
            reference: "pare-compact-sha256:x".into(),
            digest: "sha256:x".into(),
            total,
            offset: 0,
            labels: Some(HashMap::from([("k".to_string(), "v".to_string())])),
            failure: Arc::clone(&failure),
        };
        (messages, failure)
    }

    #[test]
    fn a_blob_is_sent_in_chunks_at_increasing_offsets_then_committed() {
        let bytes: Vec<u8> = (0..(2 * CHUNK + CHUNK / 2)).map(|i| i as u8).collect();
        let total = bytes.len() as i64;
        let (messages, failure) = messages(Box::new(std::io::Cursor::new(bytes.clone())), total);
        let sent: Vec<WriteContentRequest> = messages.collect();
        let shape: Vec<(i32, i64, usize)> = sent
            .iter()
            .map(|m| (m.action, m.offset, m.data.len()))
            .collect();
        let (write, commit) = (WriteAction::Write as i32, WriteAction::Commit as i32);
        assert_eq!(
            shape,
            [
                (write, 0, CHUNK),
                (write, CHUNK as i64, CHUNK),
                (write, 2 * CHUNK as i64, CHUNK / 2),
                (commit, total, 0),
            ]
        );
        let data: Vec<u8> = sent.iter().flat_map(|m| m.data.clone()).collect();
        assert_eq!(data, bytes);
        assert!(
            sent.iter()
                .all(|m| m.total == total && m.expected == "sha256:x")
        );
        assert_eq!(sent[3].labels.get("k").map(String::as_str), Some("v"));
        assert!(sent[..3].iter().all(|m| m.labels.is_empty()));
        assert!(failure.lock().unwrap().is_none());
    }

    #[test]
    fn a_short_blob_ends_the_stream_without_a_commit() {
        let (messages, failure) = messages(Box::new(std::io::Cursor::new(vec![1u8; 10])), 20);
        let sent: Vec<WriteContentRequest> = messages.collect();
        assert_eq!(sent.len(), 0, "no write of a short chunk, no commit");
        let error = failure.lock().unwrap().take().expect("the failure is kept");
        assert_eq!(error.to_string(), "it ended at 10 of 20 bytes");
    }
}
