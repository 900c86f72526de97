//! What containerd sees of a snapshot: its key, parent, kind, labels and
//! times, made from a stored record.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::{Kind, Record};

/// What a snapshot looks like to containerd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Key.
    pub name: String,
    /// Parent key, empty for none.
    pub parent: String,
    /// Kind.
    pub kind: Kind,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Created.
    pub created: SystemTime,
    /// Updated.
    pub updated: SystemTime,
}

pub(super) fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn time_of(ns: i128) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}

pub(super) fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Active => "active",
        Kind::View => "view",
        Kind::Committed => "committed",
    }
}

pub(super) fn info(key: &str, record: Record) -> SnapshotInfo {
    SnapshotInfo {
        name: key.to_string(),
        parent: record.parent,
        kind: record.kind,
        labels: record.labels,
        created: time_of(record.created_ns),
        updated: time_of(record.updated_ns),
    }
}
