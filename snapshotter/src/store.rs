//! The metadata store: one redb table of snapshot records keyed by snapshot
//! key, and a counter for snapshot ids. Every change is one transaction.
//! After an I/O error (a full disk) redb refuses every later transaction until
//! the database is reopened; the store reopens it at once, so the failed
//! call reports the error and the next one works again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use pare_fs::id::{ChainId, Digest};
use pare_fs::policy::Mode;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const NEXT_ID: &str = "next_id";

/// A snapshot id: names the snapshot's directory `snapshots/<id>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SnapshotId(pub u64);

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Kind of a snapshot, as containerd knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Writable, being prepared (unpack target or container rootfs).
    Active,
    /// Read-only view of a parent.
    View,
    /// Immutable layer.
    Committed,
}

/// What an active snapshot is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A layer being unpacked, or a committed layer: plain overlay-style directory.
    Layer,
    /// A container rootfs: overlay of its own upper on the pare view of `chain`.
    Container {
        /// Key of the committed parent the view serves.
        parent: String,
        /// Chain ID of the image (the profile's key).
        chain: ChainId,
        /// Whether accesses are recorded (learn views).
        profiled: bool,
        /// The mode of the container's view (learn in records written
        /// before modes).
        #[serde(default, skip_serializing_if = "is_learn")]
        mode: Mode,
        /// In audit and enforce: the digest of the allowed-set file the
        /// view judges by.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allowed: Option<Digest>,
    },
}

fn is_learn(mode: &Mode) -> bool {
    *mode == Mode::Learn
}

impl Role {
    /// The view a container's rootfs sits on; none for layers.
    pub fn view_key(&self) -> Option<crate::views::ViewKey> {
        match self {
            Role::Layer => None,
            Role::Container {
                chain,
                mode,
                allowed,
                ..
            } => Some(crate::views::ViewKey {
                chain: chain.clone(),
                mode: *mode,
                allowed: allowed.clone(),
            }),
        }
    }

    /// The role of a container whose rootfs sits on the view `key`.
    pub fn container(parent: &str, key: &crate::views::ViewKey) -> Role {
        Role::Container {
            parent: parent.to_string(),
            chain: key.chain.clone(),
            profiled: key.records_profile(),
            mode: key.mode,
            allowed: key.allowed.clone(),
        }
    }
}

/// Disk usage of a snapshot's own directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes allocated.
    pub size: i64,
    /// Inodes used.
    pub inodes: i64,
}

/// One snapshot's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Directory id.
    pub id: SnapshotId,
    /// Kind.
    pub kind: Kind,
    /// Parent key, empty for none.
    pub parent: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time, ns since the epoch.
    pub created_ns: i128,
    /// Last update time, ns since the epoch.
    pub updated_ns: i128,
    /// What the snapshot is for.
    pub role: Role,
    /// Usage measured at commit (committed snapshots only).
    pub usage: Option<Usage>,
}

/// The store.
pub struct Store {
    path: PathBuf,
    db: RwLock<Option<Database>>,
}

/// A write transaction over the snapshot table.
pub struct Txn {
    tx: WriteTransaction,
}

fn create(path: &Path) -> Result<Database> {
    let db = Database::create(path)?;
    let tx = db.begin_write()?;
    tx.open_table(SNAPSHOTS)?;
    tx.open_table(COUNTERS)?;
    tx.commit()?;
    Ok(db)
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        Ok(Store {
            path: path.to_path_buf(),
            db: RwLock::new(Some(create(path)?)),
        })
    }

    fn db(&self) -> RwLockReadGuard<'_, Option<Database>> {
        self.db.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the database; reopens it after an I/O error.
    fn with<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        if self.db().is_none() {
            self.reopen();
        }
        let result = match self.db().as_ref() {
            Some(db) => f(db),
            None => Err(Error::Store(Box::new(redb::Error::DatabaseClosed))),
        };
        if let Err(e) = &result {
            if e.needs_reopen() {
                tracing::error!(path = %self.path.display(), error = %e, "metadata store failed; reopening it");
                self.reopen();
            }
        }
        result
    }

    fn reopen(&self) {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        // The failed instance must be closed before the file is opened again.
        drop(db.take());
        match create(&self.path) {
            Ok(fresh) => {
                *db = Some(fresh);
                tracing::info!(path = %self.path.display(), "metadata store reopened");
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot reopen the metadata store; trying again at the next call")
            }
        }
    }

    /// The record of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        self.with(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(SNAPSHOTS)?;
            match table.get(key)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Every record, by key.
    pub fn all(&self) -> Result<Vec<(String, Record)>> {
        self.with(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(SNAPSHOTS)?;
            let mut out = Vec::new();
            for item in table.iter()? {
                let (k, v) = item?;
                out.push((k.value().to_string(), serde_json::from_slice(v.value())?));
            }
            Ok(out)
        })
    }

    /// Runs `f` in one write transaction; commits when it returns `Ok`.
    pub fn write<T>(&self, f: impl FnOnce(&mut Txn) -> Result<T>) -> Result<T> {
        self.with(|db| {
            let mut txn = Txn {
                tx: db.begin_write()?,
            };
            let out = f(&mut txn)?;
            txn.tx.commit()?;
            Ok(out)
        })
    }
}

impl Txn {
    /// The record of `key`.
    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        let table = self.tx.open_table(SNAPSHOTS)?;
        let value = table.get(key)?;
        match value {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    /// The record of `key`, or NotFound.
    pub fn must_get(&self, key: &str) -> Result<Record> {
        self.get(key)?
            .ok_or_else(|| Error::NotFound(key.to_string()))
    }

    /// Writes `record` under `key`.
    pub fn put(&mut self, key: &str, record: &Record) -> Result<()> {
        let bytes = serde_json::to_vec(record)?;
        let mut table = self.tx.open_table(SNAPSHOTS)?;
        table.insert(key, bytes.as_slice())?;
        Ok(())
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: &str) -> Result<()> {
        let mut table = self.tx.open_table(SNAPSHOTS)?;
        table.remove(key)?;
        Ok(())
    }

    /// Keys of the snapshots whose parent is `key`.
    pub fn children(&self, key: &str) -> Result<Vec<String>> {
        let table = self.tx.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let record: Record = serde_json::from_slice(v.value())?;
            if record.parent == key {
                out.push(k.value().to_string());
            }
        }
        Ok(out)
    }

    /// A fresh snapshot id.
    pub fn next_id(&mut self) -> Result<SnapshotId> {
        let mut table = self.tx.open_table(COUNTERS)?;
        let next = table.get(NEXT_ID)?.map(|v| v.value()).unwrap_or(1);
        table.insert(NEXT_ID, next + 1)?;
        Ok(SnapshotId(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, parent: &str) -> Record {
        Record {
            id: SnapshotId(id),
            kind: Kind::Committed,
            parent: parent.into(),
            labels: BTreeMap::new(),
            created_ns: 1,
            updated_ns: 1,
            role: Role::Layer,
            usage: None,
        }
    }

    #[test]
    fn records_survive_reopening_and_failed_transactions_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.db");
        {
            let store = Store::open(&path).unwrap();
            store
                .write(|t| {
                    let first = t.next_id()?;
                    t.put("a", &record(first.0, ""))?;
                    let id = t.next_id()?;
                    t.put("b", &record(id.0, "a"))
                })
                .unwrap();
            let failed: Result<()> = store.write(|t| {
                t.put("c", &record(9, "b"))?;
                Err(Error::InvalidArgument("abort".into()))
            });
            assert!(failed.is_err());
        }
        let store = Store::open(&path).unwrap();
        let keys: Vec<String> = store.all().unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["a", "b"]);
        assert_eq!(store.get("b").unwrap().unwrap().id, SnapshotId(2));
        let (children, next) = store
            .write(|t| Ok((t.children("a")?, t.next_id()?)))
            .unwrap();
        assert_eq!(children, vec!["b"]);
        assert_eq!(next, SnapshotId(3));
    }

    #[test]
    fn container_records_keep_their_stored_form() {
        // As written before chains were typed: the chain is a plain string.
        let stored = r#"{"id":7,"kind":"Active","parent":"default/3/sha256:c2","labels":{},"created_ns":1,"updated_ns":2,"role":{"Container":{"parent":"default/3/sha256:c2","chain":"sha256:c2","profiled":true}},"usage":null}"#;
        let record: Record = serde_json::from_str(stored).unwrap();
        assert_eq!(
            record.role,
            Role::Container {
                parent: "default/3/sha256:c2".into(),
                chain: ChainId::from_snapshot_name("sha256:c2"),
                profiled: true,
                mode: Mode::Learn,
                allowed: None,
            }
        );
        assert_eq!(serde_json::to_string(&record).unwrap(), stored);
        assert_eq!(
            record.role.view_key(),
            Some(crate::views::ViewKey::learn(ChainId::from_snapshot_name(
                "sha256:c2"
            )))
        );
    }

    #[test]
    fn a_container_in_enforce_mode_keeps_its_view_key() {
        let key = crate::views::ViewKey::judged(
            ChainId::from_snapshot_name("sha256:c2"),
            Mode::Enforce,
            Digest::sha256(b"set"),
        );
        let role = Role::container("default/3/sha256:c2", &key);
        let json = serde_json::to_string(&role).unwrap();
        assert!(json.contains("\"mode\":\"enforce\""), "{json}");
        assert!(json.contains("\"profiled\":false"), "{json}");
        let back: Role = serde_json::from_str(&json).unwrap();
        assert_eq!(back.view_key(), Some(key));
    }
}
