//! containerd's snapshot keys and labels: which namespace a backend key
//! belongs to, and whether a Prepare is for a container or a layer unpack.

use std::collections::BTreeMap;

/// The label containerd's unpacker puts on the snapshot a layer is unpacked into.
pub const LABEL_SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";

/// containerd's metadata layer names backend snapshots `<namespace>/<n>/<key>`.
/// Returns the namespace and the key as the client gave it.
pub fn split_key(key: &str) -> (&str, &str) {
    let mut parts = key.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(ns), Some(n), Some(rest)) if n.chars().all(|c| c.is_ascii_digit()) => (ns, rest),
        _ => ("", key),
    }
}

/// True when a Prepare is for a container's rootfs rather than a layer unpack.
pub fn is_container_rootfs(key: &str, parent: &str, labels: &BTreeMap<String, String>) -> bool {
    !parent.is_empty()
        && !labels.contains_key(LABEL_SNAPSHOT_REF)
        && !split_key(key).1.starts_with("extract-")
}
