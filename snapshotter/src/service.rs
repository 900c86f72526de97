//! The containerd Snapshots gRPC service: each call runs the blocking state
//! machine on tokio's blocking pool, inside a span with the snapshot key,
//! timed and counted for the metrics when they are on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use containerd_snapshots::api::types::Mount;
use containerd_snapshots::{Info, Kind as ApiKind, Snapshotter, Usage as ApiUsage};
use futures::stream::{self, BoxStream};
use tracing::Instrument;

use crate::error::Error;
use crate::metrics::RpcMetrics;
use crate::mounts::MountSpec;
use crate::snapshots::{SnapshotInfo, Snapshots};
use crate::store::Kind;
use crate::views::ViewMounter;

/// The service containerd talks to.
pub struct Service<M: ViewMounter> {
    snapshots: Arc<Snapshots<M>>,
    metrics: Option<Arc<RpcMetrics>>,
}

impl<M: ViewMounter> Service<M> {
    /// Serves `snapshots`.
    pub fn new(snapshots: Arc<Snapshots<M>>) -> Self {
        Service {
            snapshots,
            metrics: None,
        }
    }

    /// Serves `snapshots`, counting every call into `metrics`.
    pub fn with_metrics(snapshots: Arc<Snapshots<M>>, metrics: Arc<RpcMetrics>) -> Self {
        Service {
            snapshots,
            metrics: Some(metrics),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &str,
        f: impl FnOnce(&Snapshots<M>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let span = tracing::info_span!("rpc", op, key);
        let started = Instant::now();
        let snapshots = self.snapshots.clone();
        let inner = span.clone();
        let result = tokio::task::spawn_blocking(move || inner.in_scope(|| f(&snapshots)))
            .instrument(span.clone())
            .await
            .unwrap_or_else(|_| Err(Error::Panicked(op)));
        span.in_scope(|| match &result {
            Ok(_) => tracing::debug!("ok"),
            Err(e) => tracing::info!(error = %e, code = ?e.code(), "failed"),
        });
        if let Some(metrics) = &self.metrics {
            let code = result.as_ref().err().map(Error::code);
            metrics.observe(op, started.elapsed(), code);
        }
        result
    }
}

impl<M: ViewMounter> Service<M> {
    /// Prepare (`readonly` false) and View: a new snapshot on `parent`.
    async fn create(
        &self,
        op: &'static str,
        key: String,
        parent: String,
        labels_in: HashMap<String, String>,
        readonly: bool,
    ) -> Result<Vec<Mount>, Error> {
        let k = key.clone();
        let l = labels(labels_in);
        self.run(op, &key, move |s| s.create(&k, &parent, l, readonly))
            .await
            .map(to_mounts)
    }
}

fn to_mounts(specs: Vec<MountSpec>) -> Vec<Mount> {
    specs
        .into_iter()
        .map(|m| Mount {
            r#type: m.kind,
            source: m.source,
            target: String::new(),
            options: m.options,
        })
        .collect()
}

fn labels(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

fn to_info(info: SnapshotInfo) -> Info {
    Info {
        kind: match info.kind {
            Kind::Active => ApiKind::Active,
            Kind::View => ApiKind::View,
            Kind::Committed => ApiKind::Committed,
        },
        name: info.name,
        parent: info.parent,
        labels: info.labels.into_iter().collect(),
        created_at: info.created,
        updated_at: info.updated,
    }
}

#[containerd_snapshots::tonic::async_trait]
impl<M: ViewMounter> Snapshotter for Service<M> {
    type Error = Error;

    async fn stat(&self, key: String) -> Result<Info, Error> {
        let k = key.clone();
        self.run("stat", &key, move |s| s.stat(&k))
            .await
            .map(to_info)
    }

    async fn update(&self, info: Info, fieldpaths: Option<Vec<String>>) -> Result<Info, Error> {
        let key = info.name.clone();
        let labels = labels(info.labels);
        let paths = fieldpaths.unwrap_or_default();
        let k = key.clone();
        self.run("update", &key, move |s| s.update(&k, labels, &paths))
            .await
            .map(to_info)
    }

    async fn usage(&self, key: String) -> Result<ApiUsage, Error> {
        let k = key.clone();
        let usage = self.run("usage", &key, move |s| s.usage(&k)).await?;
        Ok(ApiUsage {
            inodes: usage.inodes,
            size: usage.size,
        })
    }

    async fn mounts(&self, key: String) -> Result<Vec<Mount>, Error> {
        let k = key.clone();
        self.run("mounts", &key, move |s| s.mounts(&k))
            .await
            .map(to_mounts)
    }

    async fn prepare(
        &self,
        key: String,
        parent: String,
        labels_in: HashMap<String, String>,
    ) -> Result<Vec<Mount>, Error> {
        self.create("prepare", key, parent, labels_in, false).await
    }

    async fn view(
        &self,
        key: String,
        parent: String,
        labels_in: HashMap<String, String>,
    ) -> Result<Vec<Mount>, Error> {
        self.create("view", key, parent, labels_in, true).await
    }

    async fn commit(
        &self,
        name: String,
        key: String,
        labels_in: HashMap<String, String>,
    ) -> Result<(), Error> {
        let k = key.clone();
        let l = labels(labels_in);
        self.run("commit", &key, move |s| s.commit(&name, &k, l))
            .await
    }

    async fn remove(&self, key: String) -> Result<(), Error> {
        let k = key.clone();
        self.run("remove", &key, move |s| s.remove(&k)).await
    }

    async fn clear(&self) -> Result<(), Error> {
        let removed = self.run("cleanup", "", |s| s.cleanup()).await?;
        tracing::info!(removed, "cleanup");
        Ok(())
    }

    type InfoStream = BoxStream<'static, Result<Info, Error>>;

    async fn list(
        &self,
        _snapshotter: String,
        filters: Vec<String>,
    ) -> Result<Self::InfoStream, Error> {
        let infos = self.run("list", "", move |s| s.list(&filters)).await?;
        Ok(Box::pin(stream::iter(
            infos.into_iter().map(|i| Ok(to_info(i))),
        )))
    }
}
