//! The few TFTP datagrams a reading client sends and receives (RFC 1350, 2347), written apart
//! from the daemon's own parser so that the benchmark does not share its bugs. The load
//! generator (`tftp-load`) and the rack simulator's firmware (`sim::tftp`) both use it.

/// Opcodes (RFC 1350, RFC 2347).
const OP_RRQ: u16 = 1;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// A datagram from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply<'a> {
    /// DATA: block number and payload.
    Data {
        /// Block number (rolls over).
        block: u16,
        /// The file bytes of this block.
        payload: &'a [u8],
    },
    /// OACK: the options the server took, as sent.
    Oack(Vec<(&'a str, &'a str)>),
    /// ERROR: code and message.
    Error {
        /// Error code.
        code: u16,
        /// Message (lossy: a server may send anything).
        message: String,
    },
}

/// Why a datagram is not a reply a reading client expects.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BadReply {
    /// Shorter than its header.
    Truncated,
    /// An opcode a server does not send to a reader (RRQ, WRQ, ACK, unknown).
    UnexpectedOpcode(u16),
    /// An OACK that is not a list of NUL-terminated name/value strings.
    BadOack,
}

/// Parses a datagram a server sent to a reading client.
pub(crate) fn parse(bytes: &[u8]) -> Result<Reply<'_>, BadReply> {
    if bytes.len() < 2 {
        return Err(BadReply::Truncated);
    }
    let opcode = u16::from_be_bytes([bytes[0], bytes[1]]);
    let body = &bytes[2..];
    match opcode {
        OP_DATA => {
            if body.len() < 2 {
                return Err(BadReply::Truncated);
            }
            Ok(Reply::Data {
                block: u16::from_be_bytes([body[0], body[1]]),
                payload: &body[2..],
            })
        }
        OP_ERROR => {
            if body.len() < 2 {
                return Err(BadReply::Truncated);
            }
            let text = &body[2..];
            let text = text.split(|&b| b == 0).next().unwrap_or_default();
            Ok(Reply::Error {
                code: u16::from_be_bytes([body[0], body[1]]),
                message: String::from_utf8_lossy(text).into_owned(),
            })
        }
        OP_OACK => {
            let Some(strings) = body.strip_suffix(&[0]) else {
                return Err(BadReply::BadOack);
            };
            let mut parts = strings.split(|&b| b == 0);
            let mut options = Vec::new();
            while let Some(name) = parts.next() {
                let value = parts.next().ok_or(BadReply::BadOack)?;
                let name = std::str::from_utf8(name).map_err(|_| BadReply::BadOack)?;
                let value = std::str::from_utf8(value).map_err(|_| BadReply::BadOack)?;
                options.push((name, value));
            }
            Ok(Reply::Oack(options))
        }
        other => Err(BadReply::UnexpectedOpcode(other)),
    }
}

/// A read request for `file` in octet mode with `options` (name, value).
pub(crate) fn rrq(file: &str, options: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&OP_RRQ.to_be_bytes());
    for part in [file, "octet"] {
        out.extend_from_slice(part.as_bytes());
        out.push(0);
    }
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// An ACK of `block`.
pub(crate) fn ack(block: u16) -> [u8; 4] {
    let [a, b] = OP_ACK.to_be_bytes();
    let [c, d] = block.to_be_bytes();
    [a, b, c, d]
}

/// An ERROR with `code` and `message` (sent to a stray sender: code 5, unknown transfer ID).
pub(crate) fn error(code: u16, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.extend_from_slice(&OP_ERROR.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out.push(0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_read_request_with_options() {
        let opts = [
            ("blksize", "1468".to_owned()),
            ("windowsize", "4".to_owned()),
        ];
        assert_eq!(
            rrq("nbp.efi", &opts),
            b"\x00\x01nbp.efi\x00octet\x00blksize\x001468\x00windowsize\x004\x00"
        );
        assert_eq!(ack(0x1234), *b"\x00\x04\x12\x34");
        assert_eq!(error(5, "x"), b"\x00\x05\x00\x05x\x00");
    }

    #[test]
    fn parses_what_servers_send() {
        assert_eq!(
            parse(b"\x00\x03\xff\xffabc"),
            Ok(Reply::Data {
                block: 65535,
                payload: b"abc"
            })
        );
        assert_eq!(
            parse(b"\x00\x03\x00\x01"),
            Ok(Reply::Data {
                block: 1,
                payload: b""
            })
        );
        assert_eq!(
            parse(b"\x00\x06tsize\x001048576\x00blksize\x001468\x00"),
            Ok(Reply::Oack(vec![("tsize", "1048576"), ("blksize", "1468")]))
        );
        assert_eq!(
            parse(b"\x00\x05\x00\x01File not found\x00"),
            Ok(Reply::Error {
                code: 1,
                message: "File not found".into()
            })
        );
        // Without the NUL: a server may forget it.
        assert_eq!(
            parse(b"\x00\x05\x00\x00busy"),
            Ok(Reply::Error {
                code: 0,
                message: "busy".into()
            })
        );
    }

    #[test]
    fn refuses_what_a_reader_cannot_take() {
        assert_eq!(parse(b"\x00"), Err(BadReply::Truncated));
        assert_eq!(parse(b"\x00\x03\x00"), Err(BadReply::Truncated));
        assert_eq!(
            parse(b"\x00\x04\x00\x01"),
            Err(BadReply::UnexpectedOpcode(4))
        );
        assert_eq!(parse(b"\x00\x06blksize\x00"), Err(BadReply::BadOack));
        assert_eq!(parse(b"\x00\x06blksize\x001468"), Err(BadReply::BadOack));
    }
}
