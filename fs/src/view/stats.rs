//! Counts of the FUSE requests a view served, by opcode, with a latency
//! histogram: a fixed array of atomics per opcode, so counting costs two
//! clock reads and two relaxed atomic adds, and never a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Upper bounds of the latency buckets, in seconds; a last bucket takes the
/// rest (`+Inf`).
pub const LATENCY_BOUNDS_SECONDS: [f64; 15] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 1.0,
];

const BUCKETS: usize = LATENCY_BOUNDS_SECONDS.len() + 1;

/// The FUSE operations a view answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opcode {
    /// LOOKUP: a name resolved in a directory.
    Lookup,
    /// FORGET: the kernel dropped a node.
    Forget,
    /// GETATTR.
    Getattr,
    /// READLINK.
    Readlink,
    /// OPEN.
    Open,
    /// READ (through the daemon; passthrough reads never reach it).
    Read,
    /// FLUSH.
    Flush,
    /// RELEASE.
    Release,
    /// OPENDIR.
    Opendir,
    /// READDIR.
    Readdir,
    /// STATFS.
    Statfs,
    /// GETXATTR.
    Getxattr,
    /// LISTXATTR.
    Listxattr,
    /// ACCESS.
    Access,
    /// IOCTL.
    Ioctl,
}

impl Opcode {
    /// Every opcode, in a fixed order.
    pub const ALL: [Opcode; 15] = [
        Opcode::Lookup,
        Opcode::Forget,
        Opcode::Getattr,
        Opcode::Readlink,
        Opcode::Open,
        Opcode::Read,
        Opcode::Flush,
        Opcode::Release,
        Opcode::Opendir,
        Opcode::Readdir,
        Opcode::Statfs,
        Opcode::Getxattr,
        Opcode::Listxattr,
        Opcode::Access,
        Opcode::Ioctl,
    ];

    /// The lower-case name (`lookup`, `open`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Opcode::Lookup => "lookup",
            Opcode::Forget => "forget",
            Opcode::Getattr => "getattr",
            Opcode::Readlink => "readlink",
            Opcode::Open => "open",
            Opcode::Read => "read",
            Opcode::Flush => "flush",
            Opcode::Release => "release",
            Opcode::Opendir => "opendir",
            Opcode::Readdir => "readdir",
            Opcode::Statfs => "statfs",
            Opcode::Getxattr => "getxattr",
            Opcode::Listxattr => "listxattr",
            Opcode::Access => "access",
            Opcode::Ioctl => "ioctl",
        }
    }
}

#[derive(Debug, Default)]
struct OpCounters {
    sum_ns: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

/// The request counters of one view, shared by its serving threads.
#[derive(Debug, Default)]
pub struct RequestStats {
    ops: [OpCounters; Opcode::ALL.len()],
}

/// Times one request; counts it when dropped.
pub(crate) struct Timed<'a> {
    counters: &'a OpCounters,
    start: Instant,
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BOUNDS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS - 1);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.counters.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.counters.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

impl RequestStats {
    /// Starts timing a request of `op`; it is counted when the guard drops.
    pub(crate) fn time(&self, op: Opcode) -> Timed<'_> {
        Timed {
            counters: &self.ops[op as usize],
            start: Instant::now(),
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> RequestCounts {
        let ops = Opcode::ALL
            .iter()
            .map(|op| {
                let c = &self.ops[*op as usize];
                let buckets: Vec<u64> = c
                    .buckets
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect();
                OpCounts {
                    op: op.name().to_string(),
                    count: buckets.iter().sum(),
                    sum_seconds: c.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
                    buckets,
                }
            })
            .collect();
        RequestCounts {
            bounds_seconds: LATENCY_BOUNDS_SECONDS.to_vec(),
            ops,
        }
    }
}

/// The requests of a view so far, by opcode (serializable: view servers
/// hand them to the snapshotter in a file).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Upper bounds of the latency buckets in seconds (the last bucket,
    /// `+Inf`, has none).
    pub bounds_seconds: Vec<f64>,
    /// One entry per opcode.
    pub ops: Vec<OpCounts>,
}

/// The requests of one opcode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpCounts {
    /// The opcode's name (`lookup`, `open`, ...).
    pub op: String,
    /// Requests answered.
    pub count: u64,
    /// Time spent answering them, in seconds.
    pub sum_seconds: f64,
    /// Requests per latency bucket (not cumulative), one more than
    /// `bounds_seconds`.
    pub buckets: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_is_counted_once_under_its_opcode_and_in_one_bucket() {
        let stats = RequestStats::default();
        for _ in 0..3 {
            drop(stats.time(Opcode::Lookup));
        }
        drop(stats.time(Opcode::Open));
        let counts = stats.snapshot();
        assert_eq!(counts.bounds_seconds.len() + 1, BUCKETS);
        for op in &counts.ops {
            let want = match op.op.as_str() {
                "lookup" => 3,
                "open" => 1,
                _ => 0,
            };
            assert_eq!(op.count, want, "{}", op.op);
            assert_eq!(op.buckets.len(), BUCKETS);
            assert_eq!(op.buckets.iter().sum::<u64>(), want, "{}", op.op);
        }
        assert_eq!(counts.ops.len(), Opcode::ALL.len());
    }

    #[test]
    fn opcodes_index_their_own_counters() {
        for (i, op) in Opcode::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "{}", op.name());
        }
    }
}
