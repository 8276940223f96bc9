//! The journal's byte format: the file header, commit blocks, and the scan that replays a file
//! and tells a torn tail (left by a crash) from corruption in the middle. Pure functions over
//! bytes: the file IO is in `writer.rs`.
//!
//! ```text
//! file   = header block*
//! header = "PXELEASE" version:u32 flags:u32                          (16 bytes)
//! block  = "LBLK" body_len:u32 count:u32 body_crc:u32 header_crc:u32  (20 bytes) body
//! body   = record{count}                                  (see record.rs)
//! ```
//!
//! `header_crc` is the CRC-32 of the block header's first 16 bytes, `body_crc` that of the body.
//! One group commit writes exactly one block, so a crash can tear at most the last block.

use super::record::{DecodeError, LeaseRecord, MAX_RECORD_BYTES};

/// First bytes of every journal file.
pub(super) const FILE_MAGIC: [u8; 8] = *b"PXELEASE";
/// Version of the format this code reads and writes.
pub(super) const FORMAT_VERSION: u32 = 1;
/// Bytes of the file header.
pub(super) const FILE_HEADER_BYTES: usize = 16;
/// First bytes of every block.
pub(super) const BLOCK_MAGIC: [u8; 4] = *b"LBLK";
/// Bytes of a block header.
pub(super) const BLOCK_HEADER_BYTES: usize = 20;
/// Largest block body the writer makes; a longer one is refused when read.
pub(super) const MAX_BLOCK_BODY_BYTES: usize = 1 << 20;

// Every record fits its u16 length prefix and a block.
const _: () =
    assert!(MAX_RECORD_BYTES <= u16::MAX as usize && MAX_RECORD_BYTES <= MAX_BLOCK_BODY_BYTES);

/// The file header of this version.
pub(super) fn file_header() -> [u8; FILE_HEADER_BYTES] {
    let mut h = [0; FILE_HEADER_BYTES];
    h[..8].copy_from_slice(&FILE_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Reserves a block header at the end of `out`; returns where the block starts. Append encoded
/// records, then call [`finish_block`].
pub(super) fn begin_block(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.resize(start + BLOCK_HEADER_BYTES, 0);
    start
}

/// Fills in the header of the block that starts at `start` and holds `count` records.
pub(super) fn finish_block(out: &mut [u8], start: usize, count: u32) {
    let (head, body) = out[start..].split_at_mut(BLOCK_HEADER_BYTES);
    debug_assert!(body.len() <= MAX_BLOCK_BODY_BYTES);
    head[..4].copy_from_slice(&BLOCK_MAGIC);
    head[4..8].copy_from_slice(&(body.len() as u32).to_le_bytes());
    head[8..12].copy_from_slice(&count.to_le_bytes());
    head[12..16].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    let header_crc = crc32fast::hash(&head[..16]);
    head[16..20].copy_from_slice(&header_crc.to_le_bytes());
}

/// How a scan of a whole journal ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ScanEnd {
    /// Bytes from the start of the file to the end of the last valid block.
    pub valid_len: u64,
    /// Records replayed.
    pub records: u64,
    /// Why the bytes after `valid_len` (if any) are a torn tail.
    pub torn: Option<&'static str>,
}

/// Why a journal cannot be replayed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum ScanError {
    /// The file does not start with this version's header.
    #[error("not a lease journal of format version {FORMAT_VERSION}: {0}")]
    Header(String),
    /// Damage that a crash cannot leave: data that was once durable is unreadable.
    #[error("corrupt at offset {offset}: {reason}")]
    Corrupt {
        /// Where the bad block starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// A block as found at an offset.
enum Block<'a> {
    /// Header and body check out.
    Valid { body: &'a [u8], count: u32 },
    /// The header checks out (so its length is trusted) but the block is cut short or its body
    /// does not match its CRC.
    BadBody { end: usize, reason: &'static str },
    /// The header is cut short or is not a block header.
    BadHeader { reason: &'static str },
    /// The header checks out but claims more than the writer ever writes.
    TooLong { body_len: usize },
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(a)
}

fn block_at(bytes: &[u8], pos: usize) -> Block<'_> {
    let Some(head) = bytes.get(pos..pos + BLOCK_HEADER_BYTES) else {
        return Block::BadHeader {
            reason: "block header cut short",
        };
    };
    if head[..4] != BLOCK_MAGIC {
        return Block::BadHeader {
            reason: "no block magic",
        };
    }
    if crc32fast::hash(&head[..16]) != u32_at(head, 16) {
        return Block::BadHeader {
            reason: "block header CRC mismatch",
        };
    }
    let body_len = u32_at(head, 4) as usize;
    if body_len > MAX_BLOCK_BODY_BYTES {
        return Block::TooLong { body_len };
    }
    let start = pos + BLOCK_HEADER_BYTES;
    let end = start + body_len;
    let Some(body) = bytes.get(start..end) else {
        return Block::BadBody {
            end,
            reason: "block cut short",
        };
    };
    if crc32fast::hash(body) != u32_at(head, 12) {
        return Block::BadBody {
            end,
            reason: "block body CRC mismatch",
        };
    }
    Block::Valid {
        body,
        count: u32_at(head, 8),
    }
}

/// The offset of the first valid block that starts after `from`, if any.
fn valid_block_after(bytes: &[u8], from: usize) -> Option<usize> {
    let last = bytes.len().checked_sub(BLOCK_HEADER_BYTES)?;
    (from + 1..=last).find(|&p| {
        bytes[p..p + 4] == BLOCK_MAGIC && matches!(block_at(bytes, p), Block::Valid { .. })
    })
}

/// Replays a whole journal, calling `apply` with each record in order.
///
/// A damaged region is a torn tail (reported in [`ScanEnd::torn`], to be truncated) when it can
/// be what a crash leaves of the last write, which is one block:
/// - the block's header checks out and the block reaches to or past the end of the file (the
///   write was cut short, or its pages were not all written back), or
/// - the header does not check out, no valid block starts anywhere after it, and the damaged
///   region is no longer than one block.
///
/// Anything else is corruption of data that was once durable: an error naming the offset.
pub(super) fn scan(bytes: &[u8], mut apply: impl FnMut(LeaseRecord)) -> Result<ScanEnd, ScanError> {
    let header = bytes.get(..FILE_HEADER_BYTES).ok_or_else(|| {
        ScanError::Header(format!(
            "{} bytes, shorter than the {FILE_HEADER_BYTES}-byte header",
            bytes.len()
        ))
    })?;
    if header[..8] != FILE_MAGIC {
        return Err(ScanError::Header("no PXELEASE magic".into()));
    }
    let version = u32_at(header, 8);
    if version != FORMAT_VERSION {
        return Err(ScanError::Header(format!("format version {version}")));
    }

    let mut pos = FILE_HEADER_BYTES;
    let mut records = 0u64;
    let corrupt = |pos: usize, reason: String| ScanError::Corrupt {
        offset: pos as u64,
        reason,
    };
    while pos < bytes.len() {
        let torn = match block_at(bytes, pos) {
            Block::Valid { body, count } => {
                let mut at = 0;
                for i in 0..count {
                    let (record, used) =
                        LeaseRecord::decode(&body[at..]).map_err(|e: DecodeError| {
                            corrupt(pos, format!("record {i} of a valid block: {e}"))
                        })?;
                    apply(record);
                    at += used;
                    records += 1;
                }
                if at != body.len() {
                    return Err(corrupt(
                        pos,
                        format!(
                            "block of {count} records has {} bytes after them",
                            body.len() - at
                        ),
                    ));
                }
                pos += BLOCK_HEADER_BYTES + body.len();
                continue;
            }
            Block::TooLong { body_len } => {
                return Err(corrupt(
                    pos,
                    format!("block of {body_len} bytes, more than {MAX_BLOCK_BODY_BYTES}"),
                ))
            }
            Block::BadBody { end, reason } => {
                if end < bytes.len() {
                    return Err(corrupt(
                        pos,
                        format!("{reason}, with {} bytes after the block", bytes.len() - end),
                    ));
                }
                reason
            }
            Block::BadHeader { reason } => {
                if let Some(next) = valid_block_after(bytes, pos) {
                    return Err(corrupt(
                        pos,
                        format!("{reason}, but a valid block follows at offset {next}"),
                    ));
                }
                let left = bytes.len() - pos;
                if left > BLOCK_HEADER_BYTES + MAX_BLOCK_BODY_BYTES {
                    return Err(corrupt(
                        pos,
                        format!("{reason}, and the {left} bytes after it are more than a block"),
                    ));
                }
                reason
            }
        };
        return Ok(ScanEnd {
            valid_len: pos as u64,
            records,
            torn: Some(torn),
        });
    }
    Ok(ScanEnd {
        valid_len: pos as u64,
        records,
        torn: None,
    })
}
