//! pare-snapshotter: a containerd proxy snapshotter that stores layers as
//! overlay-style directories and serves every container's rootfs as an overlay
//! on pare's profiling FUSE view of the image chain.
//!
//! - [`store`]: the transactional metadata store (redb);
//! - [`snapshots`]: containerd's snapshot semantics over store, dirs and views;
//! - [`views`]: one view per image chain, mode and allowed set, shared by its containers;
//! - [`viewproc`]: the processes that serve views and outlive the daemon;
//! - [`notify`]: readiness for systemd (`Type=notify`);
//! - [`service`]: the gRPC service containerd calls;
//! - [`metrics`]: the Prometheus endpoint (`--metrics-address`);
//! - [`config`]: the TOML configuration.

pub mod config;
pub mod error;
pub mod filter;
pub mod metrics;
pub mod mounts;
pub mod notify;
pub mod service;
pub mod snapshots;
pub mod store;
pub mod usage;
pub mod viewproc;
pub mod views;
