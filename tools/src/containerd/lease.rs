//! Leases: they hold content and snapshots against containerd's garbage
//! collector while pare works, and expire on their own if pare dies.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::{CreateRequest, DeleteRequest};
use containerd_client::tonic::Status;
use containerd_client::tonic::metadata::AsciiMetadataValue;

use super::{Client, ContainerdError, unique_name};

/// How long a lease outlives a pare that dies without deleting it.
pub const LEASE_EXPIRY: Duration = Duration::from_secs(3600);

/// A lease held by this client.
#[derive(Debug)]
pub(super) struct Lease {
    /// The lease ID.
    pub(super) id: String,
    /// The ID as the `containerd-lease` header value.
    pub(super) header: AsciiMetadataValue,
}

impl Client {
    /// Creates a lease that expires after [`LEASE_EXPIRY`] (label
    /// `containerd.io/gc.expire`).
    pub(super) async fn create_lease(&self) -> Result<Lease, ContainerdError> {
        let id = unique_name("pare-compact");
        let expire = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + LEASE_EXPIRY.as_secs();
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), rfc3339(expire))]);
        let op = format!("create lease {id}");
        let header = AsciiMetadataValue::try_from(id.as_str())
            .map_err(|_| self.grpc(&op, Status::invalid_argument("the lease id is not ASCII")))?;
        let request = self.request(
            CreateRequest {
                id: id.clone(),
                labels,
            },
            None,
        );
        self.leases()
            .create(request)
            .await
            .map_err(|status| self.grpc(&op, status))?;
        Ok(Lease { id, header })
    }

    /// Deletes `lease`; what it alone held becomes garbage. A failure is only
    /// logged: the lease expires anyway.
    pub(super) async fn delete_lease(&self, lease: Lease) {
        let request = self.request(
            DeleteRequest {
                id: lease.id.clone(),
                sync: false,
            },
            None,
        );
        if let Err(status) = self.leases().delete(request).await {
            tracing::warn!(lease = %lease.id, %status, "cannot delete containerd lease; it expires in an hour");
        }
    }
}

/// `secs` since the epoch as RFC 3339 UTC (`2024-01-02T03:04:05Z`), the
/// format containerd parses `containerd.io/gc.expire` with.
pub(super) fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
