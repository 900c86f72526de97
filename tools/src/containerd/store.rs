//! Storing a new image: its blobs into the content store (streaming writes
//! under a lease, with the garbage-collection labels that tie them together),
//! then the image record pointing at the manifest.

use std::collections::HashMap;

use containerd_client::services::v1::{
    AddResourceRequest, CreateImageRequest, Image, Info, InfoRequest, Resource, UpdateImageRequest,
    UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor;
use prost_types::FieldMask;

use super::lease::Lease;
use super::{Client, ContainerdError};
use crate::oci::{Blob, NewImage};

/// Bytes per write message (containerd accepts messages of up to 16 MiB).
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
    pub async fn store_image(&self, name: &str, image: &NewImage) -> Result<(), ContainerdError> {
        let lease = self.create_lease().await?;
        let result = self.store_under(name, image, &lease).await;
        self.delete_lease(lease).await;
        result
    }

    async fn store_under(
        &self,
        name: &str,
        image: &NewImage,
        lease: &Lease,
    ) -> Result<(), ContainerdError> {
        let manifest_labels = HashMap::from([
            (
                "containerd.io/gc.ref.content.config".to_string(),
                image.config.digest.clone(),
            ),
            (
                "containerd.io/gc.ref.content.l.0".to_string(),
                image.layer.digest.clone(),
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
                media_type: image.manifest.media_type.clone(),
                digest: image.manifest.digest.clone(),
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
        blob: &Blob,
        labels: HashMap<String, String>,
        lease: &Lease,
    ) -> Result<(), ContainerdError> {
        let request = self.request(
            InfoRequest {
                digest: blob.digest.clone(),
            },
            None,
        );
        let present = match self.content().info(request).await {
            Ok(response) => response.into_inner().info,
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(self.grpc(format!("stat blob {}", blob.digest), status)),
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
        tracing::debug!(digest = %blob.digest, "blob already in the content store");
        let request = self.request(
            AddResourceRequest {
                id: lease.id.clone(),
                resource: Some(Resource {
                    id: blob.digest.clone(),
                    r#type: "content".into(),
                }),
            },
            None,
        );
        self.leases()
            .add_resource(request)
            .await
            .map_err(|status| self.grpc(format!("lease blob {}", blob.digest), status))?;
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
                    digest: blob.digest.clone(),
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
            .map_err(|status| self.grpc(format!("label blob {}", blob.digest), status))
    }

    /// Writes `blob` with the Content Write stream: write messages of
    /// [`CHUNK`] bytes at increasing offsets, the first one announcing the
    /// total size and expected digest, then a commit carrying `labels`.
    async fn write_blob(
        &self,
        blob: &Blob,
        labels: HashMap<String, String>,
        lease: &Lease,
    ) -> Result<(), ContainerdError> {
        let reference = format!("pare-compact-{}", blob.digest);
        let total = blob.bytes.len() as i64;
        let mut messages: Vec<WriteContentRequest> = blob
            .bytes
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, chunk)| WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                total,
                expected: blob.digest.clone(),
                offset: (i * CHUNK) as i64,
                data: chunk.to_vec(),
                labels: HashMap::new(),
            })
            .collect();
        messages.push(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference,
            total,
            expected: blob.digest.clone(),
            offset: total,
            data: Vec::new(),
            labels,
        });
        let op = || format!("write blob {}", blob.digest);
        let request = self.request(tokio_stream::iter(messages), Some(lease));
        let mut responses = self
            .content()
            .write(request)
            .await
            .map_err(|status| self.grpc(op(), status))?
            .into_inner();
        let mut committed = None;
        while let Some(response) = responses
            .message()
            .await
            .map_err(|status| self.grpc(op(), status))?
        {
            if response.action == WriteAction::Commit as i32 {
                committed = Some(response);
            }
        }
        let write_error = |reason: String| ContainerdError::Write {
            digest: blob.digest.clone(),
            reason,
        };
        let committed = committed.ok_or_else(|| write_error("containerd sent no commit".into()))?;
        if committed.digest != blob.digest || committed.offset != total {
            return Err(write_error(format!(
                "containerd committed {} bytes as {}",
                committed.offset, committed.digest
            )));
        }
        tracing::debug!(digest = %blob.digest, size = total, "blob written");
        Ok(())
    }
}
