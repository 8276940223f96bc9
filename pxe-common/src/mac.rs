//! The one MAC address type of the workspace: what DHCP's chaddr holds, what frames are sent
//! to, what the boot policy and the timeline key machines by.

use core::{fmt, str::FromStr};

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(transparent)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// The six bytes.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(bytes: [u8; 6]) -> MacAddr {
        MacAddr(bytes)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Why a text is not a MAC address: six hex bytes separated by `:` or `-` are expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacParseError;

impl fmt::Display for MacParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a MAC address (six hex bytes separated by ':' or '-')")
    }
}

impl core::error::Error for MacParseError {}

/// Parses 1 to 6 hex bytes separated by `:` or `-` (a whole MAC or a prefix) into `out`;
/// returns how many were read.
pub fn parse_mac_prefix(text: &str, out: &mut [u8; 6]) -> Result<usize, MacParseError> {
    let mut n = 0;
    for byte in text.split([':', '-']) {
        if n == 6 || byte.len() != 2 {
            return Err(MacParseError);
        }
        out[n] = u8::from_str_radix(byte, 16).map_err(|_| MacParseError)?;
        n += 1;
    }
    Ok(n)
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<MacAddr, MacParseError> {
        let mut bytes = [0u8; 6];
        match parse_mac_prefix(s, &mut bytes)? {
            6 => Ok(MacAddr(bytes)),
            _ => Err(MacParseError),
        }
    }
}
