//! A small containerd client for `pare compact`: reads an image and its layer
//! directories, and stores a new image, over containerd's gRPC API.
//!
//! Every request carries the namespace in the `containerd-namespace` header;
//! writes carry a lease in the `containerd-lease` header, so that garbage
//! collection cannot take half-written content.

mod image;
mod lease;
mod snapshots;
mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::tonic::metadata::AsciiMetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use pare_fs::id::{ChainId, Digest};

pub use image::SourceImage;
use lease::Lease;

/// How long connecting to containerd (and its first answer) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong talking to containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// The socket is missing, refuses connections or does not answer as containerd.
    #[error("cannot connect to containerd at {}: {reason}", address.display())]
    Connect {
        /// The socket path.
        address: PathBuf,
        /// Why.
        reason: String,
    },
    /// The namespace cannot be sent as a gRPC header.
    #[error("{namespace:?} is not a valid containerd namespace")]
    BadNamespace {
        /// The rejected namespace.
        namespace: String,
    },
    /// No image of that name.
    #[error("image {name} not found in namespace {namespace}")]
    ImageNotFound {
        /// The image name.
        name: String,
        /// The namespace searched.
        namespace: String,
    },
    /// A blob is not in the content store.
    #[error("blob {digest} not found in the content store (namespace {namespace})")]
    BlobNotFound {
        /// The missing digest.
        digest: Digest,
        /// The namespace searched.
        namespace: String,
    },
    /// The content store returned bytes that do not hash to their digest.
    #[error("blob {digest} read from containerd hashes to {actual}")]
    DigestMismatch {
        /// The digest asked for.
        digest: Digest,
        /// The digest of what came back.
        actual: Digest,
    },
    /// An index has no manifest for this machine's platform.
    #[error("image {name} has no manifest for platform {platform}")]
    NoPlatform {
        /// The image name.
        name: String,
        /// The platform looked for, e.g. `linux/amd64`.
        platform: String,
    },
    /// The image's index, manifest or config is malformed or unsupported.
    #[error("image {name}: {reason}")]
    BadImage {
        /// The image name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The layer chain has no committed snapshot in that snapshotter.
    #[error(
        "the image with top layer {chain_id} is not unpacked with snapshotter {snapshotter} \
         in namespace {namespace}; run `ctr --namespace {namespace} images unpack \
         --snapshotter {snapshotter} IMAGE`"
    )]
    NotUnpacked {
        /// The top layer's chain ID.
        chain_id: ChainId,
        /// The snapshotter.
        snapshotter: String,
        /// The namespace.
        namespace: String,
    },
    /// The snapshotter's view mounts do not name layer directories pare can read.
    #[error("snapshotter {snapshotter} does not expose layer directories: {reason}")]
    UnsupportedMounts {
        /// The snapshotter.
        snapshotter: String,
        /// What was found instead.
        reason: String,
    },
    /// A content write ended without committing the expected blob.
    #[error("writing blob {digest} to containerd: {reason}")]
    Write {
        /// The blob's digest.
        digest: Digest,
        /// What went wrong.
        reason: String,
    },
    /// containerd answered a request with an error.
    #[error("containerd at {}: {op}: {code:?}: {message}", address.display())]
    Grpc {
        /// The socket path.
        address: PathBuf,
        /// The operation, with its subject (`get image docker.io/x:y`).
        op: String,
        /// The gRPC status code.
        code: Code,
        /// containerd's message.
        message: String,
    },
}

/// A connection to containerd, bound to one namespace.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    address: PathBuf,
    namespace: String,
    namespace_header: AsciiMetadataValue,
}

impl Client {
    /// Connects to the containerd socket `address` and checks that it answers
    /// (the Version API) within [`CONNECT_TIMEOUT`]. Requests then go to `namespace`.
    pub async fn connect(address: &Path, namespace: &str) -> Result<Client, ContainerdError> {
        let connect_error = |reason: String| ContainerdError::Connect {
            address: address.to_path_buf(),
            reason,
        };
        let namespace_header = AsciiMetadataValue::try_from(namespace)
            .ok()
            .filter(|_| !namespace.is_empty())
            .ok_or_else(|| ContainerdError::BadNamespace {
                namespace: namespace.to_string(),
            })?;
        if !address.exists() {
            return Err(connect_error(
                "no such socket (is containerd running?)".into(),
            ));
        }
        let channel = tokio::time::timeout(CONNECT_TIMEOUT, containerd_client::connect(address))
            .await
            .map_err(|_| connect_error(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| connect_error(error_chain(&e)))?;
        let client = Client {
            channel,
            address: address.to_path_buf(),
            namespace: namespace.to_string(),
            namespace_header,
        };
        let mut versions = VersionClient::new(client.channel.clone());
        let version = tokio::time::timeout(CONNECT_TIMEOUT, versions.version(Request::new(())))
            .await
            .map_err(|_| connect_error(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|status| connect_error(format!("version request failed: {status}")))?;
        tracing::debug!(
            address = %address.display(),
            version = %version.into_inner().version,
            "connected to containerd"
        );
        Ok(client)
    }

    /// The namespace requests go to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The socket path.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// `message` as a request in this client's namespace, under `lease` if given.
    fn request<T>(&self, message: T, lease: Option<&Lease>) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert("containerd-namespace", self.namespace_header.clone());
        if let Some(lease) = lease {
            metadata.insert("containerd-lease", lease.header.clone());
        }
        request
    }

    /// A [`ContainerdError::Grpc`] for `status`, returned by operation `op`.
    fn grpc(&self, op: impl Into<String>, status: Status) -> ContainerdError {
        ContainerdError::Grpc {
            address: self.address.clone(),
            op: op.into(),
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone())
    }

    fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }

    fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.channel.clone())
    }

    fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }
}

/// An error and its sources, joined by `: ` (a tonic transport error says
/// only "transport error"; the cause is in its sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A name no other pare process uses: `<prefix>-<pid>-<nanoseconds>`.
fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[cfg(test)]
mod tests;
