//! Leases, the records that change them, and their byte encoding inside a journal block.
//!
//! A record is `len: u16 LE` (the bytes after it) followed by `kind: u8` and the kind's fields,
//! all integers little-endian. Pure functions over bytes: no IO here.

use std::net::Ipv4Addr;

/// Longest client identifier (DHCP option 61) a lease keeps: an option's length is one byte.
pub const MAX_CLIENT_ID_BYTES: usize = 255;
/// Longest host name (DHCP option 12) a lease keeps: an option's length is one byte.
pub const MAX_HOSTNAME_BYTES: usize = 255;

const KIND_BIND: u8 = 1;
const KIND_RELEASE: u8 = 2;
const KIND_DECLINED: u8 = 3;

const FLAG_CLIENT_ID: u8 = 1;
const FLAG_HOSTNAME: u8 = 2;

/// Bytes of the `len` prefix of every record.
const LEN_PREFIX_BYTES: usize = 2;
/// Bytes of a Bind record before its optional fields: kind, mac, ip, expiry, flags.
const BIND_FIXED_BYTES: usize = 1 + 6 + 4 + 8 + 1;
/// Bytes of a Release record: kind, mac, ip.
const RELEASE_BYTES: usize = 1 + 6 + 4;
/// Bytes of a Declined record: kind, ip, until.
const DECLINED_BYTES: usize = 1 + 4 + 8;

/// Bytes of an encoded Declined record, length prefix included.
pub(super) const DECLINED_RECORD_BYTES: usize = LEN_PREFIX_BYTES + DECLINED_BYTES;
/// Largest encoded record, length prefix included: a Bind with both optional fields full.
pub(super) const MAX_RECORD_BYTES: usize =
    LEN_PREFIX_BYTES + BIND_FIXED_BYTES + 1 + MAX_CLIENT_ID_BYTES + 1 + MAX_HOSTNAME_BYTES;

/// A lease: an address bound to a client until a time.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The client's hardware address.
    pub mac: [u8; 6],
    /// The address bound to it.
    pub ip: Ipv4Addr,
    /// When the lease ends, in seconds since the Unix epoch.
    pub expires_at_unix_secs: u64,
    /// The client identifier (option 61), at most [`MAX_CLIENT_ID_BYTES`].
    pub client_id: Option<Vec<u8>>,
    /// The host name the client gave (option 12), at most [`MAX_HOSTNAME_BYTES`].
    pub hostname: Option<String>,
}

impl Lease {
    /// Bytes of this lease's encoded Bind record, length prefix included.
    pub fn bind_record_len(&self) -> usize {
        LEN_PREFIX_BYTES
            + BIND_FIXED_BYTES
            + self.client_id.as_ref().map_or(0, |id| 1 + id.len())
            + self.hostname.as_ref().map_or(0, |name| 1 + name.len())
    }
}

/// One change to the lease set: the unit that [`super::LeaseStore::commit`] makes durable.
///
/// Applied in journal order (see [`super::live::LiveSet::apply`]):
/// - `Bind` binds `lease.ip` to `lease.mac`, replacing that MAC's previous lease and taking the
///   address from any other MAC that held it; it clears a decline of the address.
/// - `Release` ends the MAC's lease if it is still on that address (a stale release is ignored).
/// - `Declined` marks an address unusable until a time (a client sent DHCPDECLINE: something
///   else answers on it) and ends any lease on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseRecord {
    /// A lease was acknowledged (DHCPACK) or renewed.
    Bind(Lease),
    /// The client released its address (DHCPRELEASE), or the server revoked it.
    Release {
        /// The client's hardware address.
        mac: [u8; 6],
        /// The address it released.
        ip: Ipv4Addr,
    },
    /// The address is in use by something else (DHCPDECLINE): do not offer it until then.
    Declined {
        /// The declined address.
        ip: Ipv4Addr,
        /// Until when it is unusable, in seconds since the Unix epoch.
        until_unix_secs: u64,
    },
}

/// Why a record cannot be stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    /// The client identifier is longer than [`MAX_CLIENT_ID_BYTES`].
    #[error("client identifier of {len} bytes is longer than {MAX_CLIENT_ID_BYTES}")]
    ClientIdTooLong {
        /// Its length.
        len: usize,
    },
    /// The host name is longer than [`MAX_HOSTNAME_BYTES`].
    #[error("host name of {len} bytes is longer than {MAX_HOSTNAME_BYTES}")]
    HostnameTooLong {
        /// Its length.
        len: usize,
    },
}

/// Why bytes inside a block (whose CRC matched) are not a record: a writer bug or a newer format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end inside a record.
    #[error("record cut short: {needed} bytes needed, {left} left")]
    Short {
        /// Bytes the record needs.
        needed: usize,
        /// Bytes left.
        left: usize,
    },
    /// The kind byte is not one this version knows.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// The record's length prefix does not match its fields.
    #[error("record length {len} does not match its fields ({fields} bytes)")]
    Length {
        /// The length prefix.
        len: usize,
        /// The bytes its fields take.
        fields: usize,
    },
    /// A host name is not UTF-8.
    #[error("host name is not UTF-8")]
    Hostname,
}

impl LeaseRecord {
    /// Checks the bounds a record must keep to be encoded.
    pub fn validate(&self) -> Result<(), InvalidRecord> {
        if let LeaseRecord::Bind(lease) = self {
            if let Some(id) = &lease.client_id {
                if id.len() > MAX_CLIENT_ID_BYTES {
                    return Err(InvalidRecord::ClientIdTooLong { len: id.len() });
                }
            }
            if let Some(name) = &lease.hostname {
                if name.len() > MAX_HOSTNAME_BYTES {
                    return Err(InvalidRecord::HostnameTooLong { len: name.len() });
                }
            }
        }
        Ok(())
    }

    /// Bytes of the encoded record, length prefix included.
    pub fn encoded_len(&self) -> usize {
        match self {
            LeaseRecord::Bind(lease) => lease.bind_record_len(),
            LeaseRecord::Release { .. } => LEN_PREFIX_BYTES + RELEASE_BYTES,
            LeaseRecord::Declined { .. } => DECLINED_RECORD_BYTES,
        }
    }

    /// Appends the encoded record to `out`. The record must have passed [`Self::validate`]
    /// (the lengths are cut to one byte otherwise).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let len = self.encoded_len() - LEN_PREFIX_BYTES;
        // At most MAX_RECORD_BYTES, far below u16::MAX.
        out.extend_from_slice(&(len as u16).to_le_bytes());
        match self {
            LeaseRecord::Bind(lease) => {
                out.push(KIND_BIND);
                out.extend_from_slice(&lease.mac);
                out.extend_from_slice(&lease.ip.octets());
                out.extend_from_slice(&lease.expires_at_unix_secs.to_le_bytes());
                let mut flags = 0;
                if lease.client_id.is_some() {
                    flags |= FLAG_CLIENT_ID;
                }
                if lease.hostname.is_some() {
                    flags |= FLAG_HOSTNAME;
                }
                out.push(flags);
                for field in [
                    lease.client_id.as_deref(),
                    lease.hostname.as_deref().map(str::as_bytes),
                ]
                .into_iter()
                .flatten()
                {
                    out.push(field.len() as u8);
                    out.extend_from_slice(field);
                }
            }
            LeaseRecord::Release { mac, ip } => {
                out.push(KIND_RELEASE);
                out.extend_from_slice(mac);
                out.extend_from_slice(&ip.octets());
            }
            LeaseRecord::Declined {
                ip,
                until_unix_secs,
            } => {
                out.push(KIND_DECLINED);
                out.extend_from_slice(&ip.octets());
                out.extend_from_slice(&until_unix_secs.to_le_bytes());
            }
        }
    }

    /// Decodes the record at the start of `bytes`; returns it and the bytes it took.
    pub fn decode(bytes: &[u8]) -> Result<(LeaseRecord, usize), DecodeError> {
        let mut r = Reader { bytes, pos: 0 };
        let len = usize::from(u16::from_le_bytes(r.take()?));
        let body = r.slice(len)?;
        let mut f = Reader {
            bytes: body,
            pos: 0,
        };
        let [kind] = f.take()?;
        let record = match kind {
            KIND_BIND => {
                let mac = f.take()?;
                let ip = Ipv4Addr::from(f.take::<4>()?);
                let expires_at_unix_secs = u64::from_le_bytes(f.take()?);
                let [flags] = f.take()?;
                let client_id = if flags & FLAG_CLIENT_ID != 0 {
                    Some(f.short_field()?.to_vec())
                } else {
                    None
                };
                let hostname = if flags & FLAG_HOSTNAME != 0 {
                    let raw = f.short_field()?;
                    Some(
                        std::str::from_utf8(raw)
                            .map_err(|_| DecodeError::Hostname)?
                            .to_owned(),
                    )
                } else {
                    None
                };
                LeaseRecord::Bind(Lease {
                    mac,
                    ip,
                    expires_at_unix_secs,
                    client_id,
                    hostname,
                })
            }
            KIND_RELEASE => LeaseRecord::Release {
                mac: f.take()?,
                ip: Ipv4Addr::from(f.take::<4>()?),
            },
            KIND_DECLINED => LeaseRecord::Declined {
                ip: Ipv4Addr::from(f.take::<4>()?),
                until_unix_secs: u64::from_le_bytes(f.take()?),
            },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        if f.pos != len {
            return Err(DecodeError::Length { len, fields: f.pos });
        }
        Ok((record, r.pos))
    }
}

/// A cursor over bytes that fails instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn slice(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            return Err(DecodeError::Short { needed: n, left });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.slice(N)?);
        Ok(a)
    }

    /// A field of at most 255 bytes behind a one-byte length.
    fn short_field(&mut self) -> Result<&'a [u8], DecodeError> {
        let [n] = self.take()?;
        self.slice(usize::from(n))
    }
}
