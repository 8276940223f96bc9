//! TFTP datagrams (RFC 1350, RFC 2347 OACK): parsing from and building into bytes. Pure.

use std::fmt;

/// Bytes of a DATA header (opcode and block number): the payload starts here.
pub const DATA_HEADER_BYTES: usize = 4;
/// Most options one request may carry; later ones are ignored (RFC 2347 names four standard
/// ones, firmware sends three).
pub const MAX_OPTIONS: usize = 16;

/// TFTP opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Opcode {
    /// Read request.
    Rrq = 1,
    /// Write request.
    Wrq = 2,
    /// A block of data.
    Data = 3,
    /// Acknowledgement of a block (or of an OACK, as block 0).
    Ack = 4,
    /// An error; ends the transfer.
    Error = 5,
    /// Option acknowledgement (RFC 2347).
    Oack = 6,
}

/// Error codes of an ERROR packet (RFC 1350, RFC 2347).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// Not defined, see the message.
    NotDefined = 0,
    /// File not found.
    FileNotFound = 1,
    /// Access violation.
    AccessViolation = 2,
    /// Disk full or allocation exceeded.
    DiskFull = 3,
    /// Illegal TFTP operation.
    IllegalOperation = 4,
    /// Unknown transfer ID.
    UnknownTid = 5,
    /// File already exists.
    FileExists = 6,
    /// No such user.
    NoSuchUser = 7,
    /// The client refuses the offered options (RFC 2347); ROMs send it after a tsize probe.
    OptionRefused = 8,
}

/// The transfer mode of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bytes as they are.
    Octet,
    /// Text with CRLF line ends. Served byte for byte like octet: boot files are binary.
    Netascii,
}

/// A read or write request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The file name as the client sent it.
    pub filename: &'a str,
    /// The transfer mode.
    pub mode: Mode,
    /// Option name and value pairs (RFC 2347), at most [`MAX_OPTIONS`], in the order sent.
    pub options: Vec<(&'a str, &'a str)>,
}

/// A parsed TFTP datagram, borrowing from the bytes it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Read request.
    Rrq(Request<'a>),
    /// Write request.
    Wrq(Request<'a>),
    /// A data block.
    Data {
        /// Block number (wraps after 65535).
        block: u16,
        /// The bytes of the block.
        payload: &'a [u8],
    },
    /// An acknowledgement.
    Ack(u16),
    /// An error.
    Error {
        /// The code (any value: clients send codes outside the table too).
        code: u16,
        /// The message (lossy: a bad message must not hide the error).
        message: String,
    },
    /// An option acknowledgement.
    Oack(Vec<(&'a str, &'a str)>),
}

/// Why a datagram is not a TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than the fixed part of its opcode.
    #[error("datagram of {0} bytes is too short")]
    TooShort(usize),
    /// An opcode outside 1-6.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A string field without its terminating NUL.
    #[error("{0} is not NUL-terminated")]
    Unterminated(&'static str),
    /// A string field that is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A mode other than octet or netascii (e.g. mail).
    #[error("unsupported transfer mode {0:?}")]
    UnsupportedMode(String),
    /// An empty file name.
    #[error("empty file name")]
    EmptyFilename,
    /// An option name without a value.
    #[error("option {0:?} has no value")]
    OptionWithoutValue(String),
    /// An ACK or DATA longer than it may be, or bytes after the last field.
    #[error("{0} extra bytes after the packet")]
    Trailing(usize),
}

/// The error a peer is sent in an ERROR packet: deliberately a different type from the
/// internal errors, which may say more than a client should learn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    /// The code.
    pub code: ErrorCode,
    /// The message, short and without server paths.
    pub message: String,
}

impl WireError {
    /// An ERROR with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError {
            code,
            message: message.into(),
        }
    }

    /// The ERROR packet for it.
    pub fn to_packet(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.message.len());
        write_error(self.code as u16, &self.message, &mut out);
        out
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ERROR {} {:?}", self.code as u16, self.message)
    }
}

impl<'a> Packet<'a> {
    /// Parses one datagram.
    pub fn parse(bytes: &'a [u8]) -> Result<Packet<'a>, ParseError> {
        if bytes.len() < 2 {
            return Err(ParseError::TooShort(bytes.len()));
        }
        let opcode = u16::from_be_bytes([bytes[0], bytes[1]]);
        let body = &bytes[2..];
        match opcode {
            1 => Ok(Packet::Rrq(parse_request(body)?)),
            2 => Ok(Packet::Wrq(parse_request(body)?)),
            3 => {
                let block = read_u16(body).ok_or(ParseError::TooShort(bytes.len()))?;
                Ok(Packet::Data {
                    block,
                    payload: &body[2..],
                })
            }
            4 => {
                let block = read_u16(body).ok_or(ParseError::TooShort(bytes.len()))?;
                // Some stacks pad short frames; an ACK is exactly 4 bytes, padding is ignored
                // only when it is zeros.
                if body[2..].iter().any(|&b| b != 0) {
                    return Err(ParseError::Trailing(body.len() - 2));
                }
                Ok(Packet::Ack(block))
            }
            5 => {
                let code = read_u16(body).ok_or(ParseError::TooShort(bytes.len()))?;
                // The message is optional in practice: some ROMs send the bare code.
                let rest = &body[2..];
                let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                let message = String::from_utf8_lossy(&rest[..end]).into_owned();
                Ok(Packet::Error { code, message })
            }
            6 => Ok(Packet::Oack(parse_options(body)?)),
            other => Err(ParseError::UnknownOpcode(other)),
        }
    }
}

fn read_u16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

/// Splits off one NUL-terminated UTF-8 string.
fn take_str<'a>(b: &'a [u8], what: &'static str) -> Result<(&'a str, &'a [u8]), ParseError> {
    let end = b
        .iter()
        .position(|&c| c == 0)
        .ok_or(ParseError::Unterminated(what))?;
    let s = std::str::from_utf8(&b[..end]).map_err(|_| ParseError::NotUtf8(what))?;
    Ok((s, &b[end + 1..]))
}

fn parse_request(body: &[u8]) -> Result<Request<'_>, ParseError> {
    let (filename, rest) = take_str(body, "file name")?;
    if filename.is_empty() {
        return Err(ParseError::EmptyFilename);
    }
    let (mode, rest) = take_str(rest, "mode")?;
    let mode = if mode.eq_ignore_ascii_case("octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case("netascii") {
        Mode::Netascii
    } else {
        return Err(ParseError::UnsupportedMode(mode.to_owned()));
    };
    Ok(Request {
        filename,
        mode,
        options: parse_options(rest)?,
    })
}

fn parse_options(mut b: &[u8]) -> Result<Vec<(&str, &str)>, ParseError> {
    let mut options = Vec::new();
    // Some clients pad the request with NULs: an empty name ends the list.
    while !b.is_empty() && b[0] != 0 {
        let (name, rest) = take_str(b, "option name")?;
        let (value, rest) = match take_str(rest, "option value") {
            Ok(v) => v,
            Err(_) => return Err(ParseError::OptionWithoutValue(name.to_owned())),
        };
        if options.len() < MAX_OPTIONS {
            options.push((name, value));
        }
        b = rest;
    }
    Ok(options)
}

/// Writes a DATA header for `block` into the first [`DATA_HEADER_BYTES`] of `buf`.
pub fn write_data_header(block: u16, buf: &mut [u8]) {
    buf[..2].copy_from_slice(&(Opcode::Data as u16).to_be_bytes());
    buf[2..4].copy_from_slice(&block.to_be_bytes());
}

/// Appends an ERROR packet to `out`.
pub fn write_error(code: u16, message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(Opcode::Error as u16).to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    // A NUL inside the message would end it early on the wire.
    out.extend(message.bytes().filter(|&b| b != 0));
    out.push(0);
}

/// Appends an OACK with `options` to `out`.
pub fn write_oack(options: &[(&str, String)], out: &mut Vec<u8>) {
    out.extend_from_slice(&(Opcode::Oack as u16).to_be_bytes());
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
}

/// An ACK packet (clients send these; the tests use it).
pub fn ack(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, Opcode::Ack as u8, b[0], b[1]]
}

/// A request packet (`opcode` RRQ or WRQ) with `options` (clients send these; the tests use it).
pub fn request(opcode: Opcode, filename: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut out = (opcode as u16).to_be_bytes().to_vec();
    for field in [filename, mode]
        .into_iter()
        .chain(options.iter().flat_map(|(n, v)| [*n, *v]))
    {
        out.extend_from_slice(field.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_uefi_read_request() {
        let bytes =
            b"\x00\x01snponly.efi\x00octet\x00tsize\x000\x00blksize\x001468\x00windowsize\x004\x00";
        let Packet::Rrq(req) = Packet::parse(bytes).unwrap() else {
            panic!("not an RRQ")
        };
        assert_eq!(req.filename, "snponly.efi");
        assert_eq!(req.mode, Mode::Octet);
        assert_eq!(
            req.options,
            vec![("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")]
        );
        assert_eq!(
            request(
                Opcode::Rrq,
                "snponly.efi",
                "octet",
                &[("tsize", "0"), ("blksize", "1468"), ("windowsize", "4")]
            ),
            bytes.to_vec()
        );
    }

    #[test]
    fn mode_is_case_insensitive_and_mail_is_refused() {
        let Packet::Wrq(req) = Packet::parse(b"\x00\x02f\x00NetASCII\x00").unwrap() else {
            panic!("not a WRQ")
        };
        assert_eq!(req.mode, Mode::Netascii);
        assert!(req.options.is_empty());
        assert_eq!(
            Packet::parse(b"\x00\x01f\x00mail\x00"),
            Err(ParseError::UnsupportedMode("mail".into()))
        );
    }

    #[test]
    fn malformed_datagrams_are_errors_not_panics() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"", ParseError::TooShort(0)),
            (b"\x00", ParseError::TooShort(1)),
            (b"\x00\x09", ParseError::UnknownOpcode(9)),
            (b"\x00\x01file", ParseError::Unterminated("file name")),
            (b"\x00\x01file\x00octet", ParseError::Unterminated("mode")),
            (b"\x00\x01\x00octet\x00", ParseError::EmptyFilename),
            (
                b"\x00\x01\xff\xfe\x00octet\x00",
                ParseError::NotUtf8("file name"),
            ),
            (
                b"\x00\x01f\x00octet\x00blksize\x00",
                ParseError::OptionWithoutValue("blksize".into()),
            ),
            (b"\x00\x04\x00", ParseError::TooShort(3)),
            (b"\x00\x04\x00\x01\x07", ParseError::Trailing(1)),
            (b"\x00\x03\x00", ParseError::TooShort(3)),
            (b"\x00\x05\x00", ParseError::TooShort(3)),
        ];
        for (bytes, expected) in cases {
            assert_eq!(Packet::parse(bytes).as_ref(), Err(expected), "{bytes:?}");
        }
        // Every prefix of a valid request parses or fails, never panics.
        let rrq = request(Opcode::Rrq, "a/b", "octet", &[("blksize", "1468")]);
        for n in 0..rrq.len() {
            let _ = Packet::parse(&rrq[..n]);
        }
    }

    #[test]
    fn options_are_bounded_and_nul_padding_ends_them() {
        let many: Vec<(String, String)> = (0..40).map(|i| (format!("x{i}"), "1".into())).collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let bytes = request(Opcode::Rrq, "f", "octet", &refs);
        let Packet::Rrq(req) = Packet::parse(&bytes).unwrap() else {
            panic!()
        };
        assert_eq!(req.options.len(), MAX_OPTIONS);

        let Packet::Rrq(req) = Packet::parse(b"\x00\x01f\x00octet\x00\x00\x00\x00").unwrap() else {
            panic!()
        };
        assert!(req.options.is_empty());
    }

    #[test]
    fn ack_data_error_oack_bytes() {
        assert_eq!(Packet::parse(&ack(0xBEEF)).unwrap(), Packet::Ack(0xBEEF));
        // Zero padding after an ACK (short-frame padding) is accepted.
        assert_eq!(
            Packet::parse(b"\x00\x04\x00\x07\x00\x00").unwrap(),
            Packet::Ack(7)
        );
        assert_eq!(
            Packet::parse(b"\x00\x03\x00\x02abc").unwrap(),
            Packet::Data {
                block: 2,
                payload: b"abc"
            }
        );
        let mut header = [0u8; 4];
        write_data_header(65535, &mut header);
        assert_eq!(header, [0, 3, 0xff, 0xff]);

        let err = WireError::new(ErrorCode::UnknownTid, "unknown transfer ID").to_packet();
        assert_eq!(err, b"\x00\x05\x00\x05unknown transfer ID\x00");
        assert_eq!(
            Packet::parse(&err).unwrap(),
            Packet::Error {
                code: 5,
                message: "unknown transfer ID".into()
            }
        );
        // A bare code without a message, as some ROMs abort.
        assert_eq!(
            Packet::parse(b"\x00\x05\x00\x08").unwrap(),
            Packet::Error {
                code: 8,
                message: String::new()
            }
        );

        let mut oack = Vec::new();
        write_oack(
            &[("tsize", "1234".into()), ("blksize", "1468".into())],
            &mut oack,
        );
        assert_eq!(oack, b"\x00\x06tsize\x001234\x00blksize\x001468\x00");
        assert_eq!(
            Packet::parse(&oack).unwrap(),
            Packet::Oack(vec![("tsize", "1234"), ("blksize", "1468")])
        );
    }
}
