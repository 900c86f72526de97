//! The journal file format (version 1).
//!
//! ```text
//! header   b"PAREPROF" | u16 LE version (1) | u16 LE flags | u32 LE n | n bytes of JSON
//!          JSON: {"image": "sha256:…" or null, "created_unix_ns": u64, "writer": "pare 0.1.0"}
//! record   u32 LE payload length | u32 LE CRC-32 of payload | payload
//! payload  u64 LE ns since created | u8 access kind | image path bytes (absolute)
//! ```
//!
//! Access kind codes: 1 lookup, 2 readdir, 3 readlink, 4 read, 5 exec,
//! 6 absent (a name looked up that the image does not have; added later, so
//! a reader that predates it refuses a journal holding one as unreadable).
//!
//! Records are only ever appended. A record whose length runs past the end
//! of the file or whose checksum does not match ends the journal: that is a
//! torn tail from a crash, which readers ignore (and writers truncate away
//! before appending again).
//!
//! Flags (bit 0 is the lowest bit of the u16):
//!
//! | bit | name | meaning |
//! | --- | --- | --- |
//! | 0 | [`FLAG_INCOMPLETE`] | records were lost while the journal was written (write errors, a full disk): the profile misses accesses |
//! | 1-15 | reserved | written as 0, ignored by readers, kept by writers |
//!
//! The flags are the only bytes a writer ever changes in place: setting
//! [`FLAG_INCOMPLETE`] is a positioned write of the two bytes at
//! [`FLAGS_OFFSET`], which needs no new block and so works on a full disk.
//! Journals written before the flag existed have flags 0 and read as complete.

use serde::{Deserialize, Serialize};

/// First bytes of every journal.
pub const MAGIC: &[u8; 8] = b"PAREPROF";
/// The version this code writes and reads.
pub const VERSION: u16 = 1;
/// Fixed part of the header before the JSON.
pub const FIXED_HEADER_LEN: usize = 16;
/// Byte offset of the u16 flags in the header.
pub const FLAGS_OFFSET: u64 = 10;
/// Flag bit 0: records were lost while the journal was written.
pub const FLAG_INCOMPLETE: u16 = 1;
/// Bytes before a record's payload.
pub const RECORD_PREFIX_LEN: usize = 8;
/// Bytes of a payload before the path.
pub const PAYLOAD_FIXED_LEN: usize = 9;
/// Largest payload a valid record can have (a path is at most `PATH_MAX`).
pub const MAX_PAYLOAD_LEN: usize = PAYLOAD_FIXED_LEN + 4096;
/// Largest JSON header accepted.
pub const MAX_HEADER_JSON_LEN: usize = 64 * 1024;

/// The self-describing part of the header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Chain ID of the image's top layer, when the writer knew it.
    pub image: Option<String>,
    /// When the profile started, in nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
    /// The program that created the journal.
    pub writer: String,
}

/// Why a header could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// The file does not start with the magic bytes.
    #[error("not a pare profile (bad magic bytes)")]
    BadMagic,
    /// Written by a newer or unknown format version.
    #[error("unsupported profile format version {0} (this pare reads version {VERSION})")]
    Version(u16),
    /// Shorter than its header says.
    #[error("profile header is truncated")]
    Truncated,
    /// The JSON part is not valid.
    #[error("profile header is malformed: {0}")]
    Json(String),
}

/// A decoded header: the JSON part, the flags and where the records start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The self-describing part.
    pub header: Header,
    /// The flags ([`FLAG_INCOMPLETE`], reserved bits as found).
    pub flags: u16,
    /// Length of the header: the offset of the first record.
    pub len: usize,
}

/// Encodes a header with `flags`.
pub fn encode_header(header: &Header, flags: u16) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("header serializes");
    let mut out = Vec::with_capacity(FIXED_HEADER_LEN + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// Decodes the header at the start of `bytes`.
pub fn decode_header(bytes: &[u8]) -> Result<Decoded, HeaderError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if bytes.len() < FIXED_HEADER_LEN {
        return Err(HeaderError::Truncated);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(HeaderError::Version(version));
    }
    let flags = u16::from_le_bytes([bytes[10], bytes[11]]);
    let n = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    if n > MAX_HEADER_JSON_LEN {
        return Err(HeaderError::Json(format!(
            "header of {n} bytes is too large"
        )));
    }
    let end = FIXED_HEADER_LEN + n;
    if bytes.len() < end {
        return Err(HeaderError::Truncated);
    }
    let header = serde_json::from_slice(&bytes[FIXED_HEADER_LEN..end])
        .map_err(|e| HeaderError::Json(e.to_string()))?;
    Ok(Decoded {
        header,
        flags,
        len: end,
    })
}

/// Appends one record to `out`.
pub fn encode_record(out: &mut Vec<u8>, ns: u64, kind: u8, path: &[u8]) {
    let len = PAYLOAD_FIXED_LEN + path.len();
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&ns.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(path);
    let crc = crc32fast::hash(&out[start + RECORD_PREFIX_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record as stored: checksum verified, contents not yet validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Byte offset of the record in the file.
    pub offset: usize,
    /// Nanoseconds since the profile started.
    pub ns: u64,
    /// Access kind code.
    pub kind: u8,
    /// Path bytes.
    pub path: &'a [u8],
}

/// Splits the records following the header. Returns the intact records and
/// the offset where they end; anything after that offset is a torn tail.
pub fn split_records(bytes: &[u8], start: usize) -> (Vec<RawRecord<'_>>, usize) {
    let mut records = Vec::new();
    let mut at = start;
    while bytes.len() - at >= RECORD_PREFIX_LEN {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let body = at + RECORD_PREFIX_LEN;
        if !(PAYLOAD_FIXED_LEN..=MAX_PAYLOAD_LEN).contains(&len) || bytes.len() - body < len {
            break;
        }
        let payload = &bytes[body..body + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        records.push(RawRecord {
            offset: at,
            ns: u64::from_le_bytes(payload[..8].try_into().expect("8 bytes")),
            kind: payload[8],
            path: &payload[PAYLOAD_FIXED_LEN..],
        });
        at = body + len;
    }
    (records, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            image: Some("sha256:abc".into()),
            created_unix_ns: 42,
            writer: "test".into(),
        }
    }

    #[test]
    fn header_round_trips_with_its_flags() {
        for flags in [0, FLAG_INCOMPLETE, 0x8001] {
            let bytes = encode_header(&header(), flags);
            let want = Decoded {
                header: header(),
                flags,
                len: bytes.len(),
            };
            assert_eq!(decode_header(&bytes), Ok(want));
        }
    }

    #[test]
    fn flags_sit_at_their_documented_offset() {
        let bytes = encode_header(&header(), FLAG_INCOMPLETE);
        let at = FLAGS_OFFSET as usize;
        assert_eq!(&bytes[at..at + 2], &FLAG_INCOMPLETE.to_le_bytes());
        assert_eq!(&encode_header(&header(), 0)[at..at + 2], &[0, 0]);
    }

    #[test]
    fn hostile_timestamps_round_trip() {
        let mut h = header();
        h.created_unix_ns = u64::MAX;
        let mut bytes = encode_header(&h, 0);
        let start = bytes.len();
        assert_eq!(decode_header(&bytes).unwrap().header, h);
        encode_record(&mut bytes, u64::MAX, 1, b"/a");
        let (records, _) = split_records(&bytes, start);
        assert_eq!(records[0].ns, u64::MAX);
    }

    #[test]
    fn header_errors_are_specific() {
        assert_eq!(
            decode_header(b"NOTAPROFILE....."),
            Err(HeaderError::BadMagic)
        );
        let mut bytes = encode_header(&header(), 0);
        bytes[8] = 9;
        assert_eq!(decode_header(&bytes), Err(HeaderError::Version(9)));
        let bytes = encode_header(&header(), 0);
        assert_eq!(
            decode_header(&bytes[..bytes.len() - 1]),
            Err(HeaderError::Truncated)
        );
    }

    #[test]
    fn records_round_trip_and_torn_tails_are_cut() {
        let mut bytes = encode_header(&header(), 0);
        let start = bytes.len();
        encode_record(&mut bytes, 5, 1, b"/bin");
        encode_record(&mut bytes, 7, 4, b"/bin/sh");
        let whole = bytes.len();
        let (records, end) = split_records(&bytes, start);
        assert_eq!(end, whole);
        assert_eq!(records.len(), 2);
        assert_eq!(
            (records[1].ns, records[1].kind, records[1].path),
            (7, 4, &b"/bin/sh"[..])
        );

        // Every truncation point inside the last record drops exactly that record.
        let first_end = records[1].offset;
        for cut in first_end..whole {
            let (records, end) = split_records(&bytes[..cut], start);
            assert_eq!((records.len(), end), (1, first_end), "cut at {cut}");
        }

        // A flipped bit in the last record's payload is a torn tail too.
        bytes[whole - 1] ^= 0x40;
        let (records, end) = split_records(&bytes, start);
        assert_eq!((records.len(), end), (1, first_end));
    }
}
