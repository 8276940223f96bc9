//! The probe's state, sans-IO: the requests it sent, the answers that match them, the
//! port-4011 requests those answers call for, and the rows of the report.
//!
//! The socket loop in `mod.rs` only moves datagrams in and out of a [`Session`].

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::MessageType;
pub use pxe_common::{DHCP_SERVER_PORT, PXE_BOOT_SERVER_PORT};

use super::{
    answer::{self, Answer},
    report::{Report, Row},
    request::{self, FirmwareKind},
};

/// A datagram the probe must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Where to.
    pub to: SocketAddrV4,
    /// The DHCP message.
    pub bytes: Vec<u8>,
    /// For which firmware kind.
    pub kind: FirmwareKind,
}

/// What a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The broadcast DISCOVER.
    Discover,
    /// The DHCPREQUEST to a boot server on port 4011.
    BootServer,
}

/// A request sent and waiting for answers.
#[derive(Debug, Clone, Copy)]
struct Sent {
    kind: FirmwareKind,
    xid: u32,
    mac: [u8; 6],
    purpose: Purpose,
}

/// The probe in progress.
#[derive(Debug)]
pub struct Session {
    follow_4011: bool,
    local_ip: Option<Ipv4Addr>,
    sent: Vec<Sent>,
    /// (kind, boot server) already asked on port 4011.
    followed: Vec<(FirmwareKind, Ipv4Addr)>,
    rows: Vec<Row>,
    malformed: Vec<String>,
    unrelated: usize,
}

impl Session {
    /// Starts a probe from the interface with MAC `interface_mac` and IPv4 address `local_ip`
    /// (`None`: no port-4011 requests can be sent): one DISCOVER per kind, each from its own MAC
    /// with an xid from `next_xid`. Returns the DISCOVERs to broadcast to port 67.
    pub fn new(
        interface_mac: [u8; 6],
        kinds: &[FirmwareKind],
        follow_4011: bool,
        local_ip: Option<Ipv4Addr>,
        next_xid: &mut impl FnMut() -> u32,
    ) -> Result<(Session, Vec<Outgoing>), dhcproto::error::EncodeError> {
        let mut session = Session {
            follow_4011,
            local_ip,
            sent: Vec::new(),
            followed: Vec::new(),
            rows: Vec::new(),
            malformed: Vec::new(),
            unrelated: 0,
        };
        let mut out = Vec::new();
        for &kind in kinds {
            let mac = request::probe_mac(interface_mac, kind);
            let xid = session.fresh_xid(next_xid);
            let bytes = request::encode(&request::discover(kind, mac, xid))?;
            session.sent.push(Sent {
                kind,
                xid,
                mac,
                purpose: Purpose::Discover,
            });
            out.push(Outgoing {
                to: SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT),
                bytes,
                kind,
            });
        }
        Ok((session, out))
    }

    /// An xid from `next_xid` that no request of this session uses yet.
    fn fresh_xid(&self, next_xid: &mut impl FnMut() -> u32) -> u32 {
        let mut xid = next_xid();
        // At most one step per request already sent.
        while self.sent.iter().any(|s| s.xid == xid) {
            xid = xid.wrapping_add(1);
        }
        xid
    }

    /// Takes a datagram received on port 68 from `from`; returns the port-4011 requests it
    /// calls for. Answers to other clients are counted and dropped; malformed ones are kept as
    /// warnings.
    pub fn handle(
        &mut self,
        bytes: &[u8],
        from: SocketAddrV4,
        next_xid: &mut impl FnMut() -> u32,
    ) -> Vec<Outgoing> {
        let answer = match answer::parse(bytes, *from.ip()) {
            Ok(answer) => answer,
            Err(err) => {
                // Someone else's broken traffic is not a warning about our servers.
                let ours = answer::peek_xid(bytes).is_none_or(|xid| self.sent_for(xid).is_some());
                if ours {
                    self.malformed.push(format!("from {from}: {err}"));
                } else {
                    self.unrelated += 1;
                }
                return Vec::new();
            }
        };
        let Some(sent) = self.sent_for(answer.xid) else {
            self.unrelated += 1;
            return Vec::new();
        };
        let mut row = row(sent, &answer);
        if answer.chaddr != sent.mac {
            row.notes
                .push("chaddr is not the MAC the request came from".to_owned());
        }
        let mut out = Vec::new();
        if self.follow_4011
            && sent.purpose == Purpose::Discover
            && answer.message_type == Some(MessageType::Offer)
            && answer.boot_file().is_none()
            && answer.is_pxe()
            && sent.kind.does_boot_server_discovery()
        {
            match self.follow(sent, &answer, next_xid) {
                Ok(Some(request)) => out.push(request),
                Ok(None) => {}
                Err(note) => row.notes.push(note),
            }
        }
        self.rows.push(row);
        out
    }

    /// The port-4011 request a PXE client sends after `answer` (an offer without a boot file),
    /// unless this kind already asked that boot server.
    fn follow(
        &mut self,
        sent: Sent,
        answer: &Answer,
        next_xid: &mut impl FnMut() -> u32,
    ) -> Result<Option<Outgoing>, String> {
        let (server, item) = answer.boot_server();
        if self.followed.contains(&(sent.kind, server)) {
            return Ok(None);
        }
        let Some(ciaddr) = self.local_ip else {
            return Err(format!(
                "not followed to {server}:{PXE_BOOT_SERVER_PORT}: the interface has no IPv4 address"
            ));
        };
        let xid = self.fresh_xid(next_xid);
        let msg = request::boot_server_request(sent.kind, sent.mac, xid, ciaddr, item);
        let bytes = request::encode(&msg)
            .map_err(|e| format!("not followed to {server}:{PXE_BOOT_SERVER_PORT}: {e}"))?;
        self.followed.push((sent.kind, server));
        self.sent.push(Sent {
            kind: sent.kind,
            xid,
            mac: sent.mac,
            purpose: Purpose::BootServer,
        });
        Ok(Some(Outgoing {
            to: SocketAddrV4::new(server, PXE_BOOT_SERVER_PORT),
            bytes,
            kind: sent.kind,
        }))
    }

    /// Records that a request for `kind` could not be sent.
    pub fn send_failed(&mut self, kind: FirmwareKind, to: SocketAddrV4, error: &str) {
        self.malformed
            .push(format!("{kind}: sending to {to}: {error}"));
    }

    fn sent_for(&self, xid: u32) -> Option<Sent> {
        self.sent.iter().find(|s| s.xid == xid).copied()
    }

    /// How many datagrams were answers to other clients.
    pub fn unrelated(&self) -> usize {
        self.unrelated
    }

    /// The report: rows grouped by kind in the order asked, each kind's in arrival order.
    pub fn into_report(self, interface: &str, kinds: &[FirmwareKind], timeout_ms: u64) -> Report {
        let mut rows = Vec::with_capacity(self.rows.len());
        for kind in kinds {
            rows.extend(self.rows.iter().filter(|r| r.kind == *kind).cloned());
        }
        Report {
            interface: interface.to_owned(),
            kinds: kinds.to_vec(),
            timeout_ms,
            rows,
            warnings: self.malformed,
        }
    }
}

/// The row for `answer` to the request `sent`.
fn row(sent: Sent, answer: &Answer) -> Row {
    let label = match (sent.purpose, answer.message_type) {
        (Purpose::Discover, Some(MessageType::Offer)) if answer.your_ip().is_none() => {
            "proxy-offer".to_owned()
        }
        (Purpose::Discover, Some(MessageType::Offer)) => "offer".to_owned(),
        (Purpose::Discover, other) => message_type_name(other),
        (Purpose::BootServer, other) => {
            format!("{}-{PXE_BOOT_SERVER_PORT}", message_type_name(other))
        }
    };
    Row {
        kind: sent.kind,
        answer: label,
        server: answer.server(),
        your_ip: answer.your_ip(),
        next_server: answer.next_server(),
        boot_file: answer.boot_file().map(str::to_owned),
        vendor_class: answer.vendor_class.clone(),
        pxe: answer.pxe().cloned(),
        options: answer.notable_options(),
        notes: answer.notes.clone(),
    }
}

fn message_type_name(message_type: Option<MessageType>) -> String {
    match message_type {
        None => "bootp-reply".to_owned(),
        Some(MessageType::Unknown(n)) => format!("type-{n}"),
        Some(t) => format!("{t:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::{
        super::answer::tests::{full_offer, proxy_offer, reply, CLIENT_MAC, SERVER},
        *,
    };

    const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 2);
    const FROM: SocketAddrV4 = SocketAddrV4::new(SERVER, 67);

    /// xids 100, 101, 102, ...
    fn counter() -> impl FnMut() -> u32 {
        let mut next = 99;
        move || {
            next += 1;
            next
        }
    }

    /// A session whose first kind's MAC is [`CLIENT_MAC`] (the fixtures' chaddr).
    fn session(kinds: &[FirmwareKind], xids: &mut impl FnMut() -> u32) -> Session {
        // probe_mac sets bit 1 of octet 0, flips octet 4 with 'P' and adds index+1 to octet 5.
        let mut iface = CLIENT_MAC;
        iface[4] ^= b'P';
        iface[5] -= 1;
        let (session, out) = Session::new(iface, kinds, true, Some(LOCAL_IP), xids).expect("new");
        assert_eq!(out.len(), kinds.len());
        for o in &out {
            assert_eq!(o.to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67));
        }
        session
    }

    #[test]
    fn each_kind_gets_its_own_xid() {
        let mut xids = || 5; // a source that always repeats itself
        let s = session(&FirmwareKind::ALL, &mut xids);
        let mut seen: Vec<u32> = s.sent.iter().map(|s| s.xid).collect();
        seen.dedup();
        assert_eq!(seen, [5, 6, 7, 8]);
    }

    #[test]
    fn full_offer_becomes_a_row_and_nothing_follows() {
        let mut xids = counter();
        let mut s = session(&[FirmwareKind::Bios], &mut xids);
        let out = s.handle(&full_offer(100), FROM, &mut xids);
        assert!(out.is_empty());
        let report = s.into_report("eth0", &[FirmwareKind::Bios], 3000);
        assert_eq!(report.rows.len(), 1);
        let row = &report.rows[0];
        assert_eq!(row.answer, "offer");
        assert_eq!(row.boot_file.as_deref(), Some("undionly.kpxe"));
        assert_eq!(row.your_ip, Some(Ipv4Addr::new(198, 18, 7, 50)));
        assert!(row.notes.is_empty(), "{:?}", row.notes);
    }

    #[test]
    fn proxy_offer_without_file_is_followed_to_4011_with_the_menu_item() {
        let mut xids = counter();
        let mut s = session(&[FirmwareKind::Bios], &mut xids);
        let out = s.handle(&proxy_offer(100), FROM, &mut xids);
        assert_eq!(out.len(), 1, "one port-4011 request");
        assert_eq!(out[0].to, SocketAddrV4::new(SERVER, 4011));
        let request = &out[0].bytes;
        assert_eq!(&request[4..8], &101u32.to_be_bytes(), "a fresh xid");
        assert_eq!(&request[12..16], &LOCAL_IP.octets(), "ciaddr");
        let vendor = [43u8, 7, 71, 4, 0x80, 0x00, 0, 0, 255];
        assert!(
            request.windows(vendor.len()).any(|w| w == vendor),
            "option 43 asks for boot item 0x8000 layer 0"
        );
        // The same offer again does not send a second request.
        assert!(s.handle(&proxy_offer(100), FROM, &mut xids).is_empty());

        let ack = reply(
            101,
            Ipv4Addr::UNSPECIFIED,
            SERVER,
            "undionly.0",
            &[
                (53, &[5]),
                (54, &SERVER.octets()),
                (60, b"PXEClient"),
                (43, &[71, 4, 0x80, 0, 0, 0, 255]),
            ],
        );
        assert!(s
            .handle(&ack, SocketAddrV4::new(SERVER, 4011), &mut xids)
            .is_empty());
        let report = s.into_report("eth0", &[FirmwareKind::Bios], 3000);
        let answers: Vec<&str> = report.rows.iter().map(|r| r.answer.as_str()).collect();
        assert_eq!(answers, ["proxy-offer", "proxy-offer", "ack-4011"]);
        assert_eq!(report.rows[2].boot_file.as_deref(), Some("undionly.0"));
        assert!(report.rows[2].options.contains(&"43.71=32768/0".to_owned()));
    }

    #[test]
    fn no_follow_without_an_address_or_when_disabled() {
        let mut xids = counter();
        let mut iface = CLIENT_MAC;
        iface[4] ^= b'P';
        iface[5] -= 1;
        let (mut s, _) =
            Session::new(iface, &[FirmwareKind::Bios], true, None, &mut xids).expect("new");
        assert!(s.handle(&proxy_offer(100), FROM, &mut xids).is_empty());
        let report = s.into_report("eth0", &[FirmwareKind::Bios], 3000);
        assert!(
            report.rows[0].notes[0].contains("no IPv4 address"),
            "{:?}",
            report.rows[0].notes
        );

        let mut xids = counter();
        let (mut s, _) = Session::new(
            iface,
            &[FirmwareKind::Bios],
            false,
            Some(LOCAL_IP),
            &mut xids,
        )
        .expect("new");
        assert!(s.handle(&proxy_offer(100), FROM, &mut xids).is_empty());
        assert!(s.rows[0].notes.is_empty());
    }

    #[test]
    fn other_clients_answers_are_not_rows_and_broken_ones_are_warnings() {
        let mut xids = counter();
        let mut s = session(&[FirmwareKind::Bios, FirmwareKind::Ipxe], &mut xids);
        assert!(s.handle(&full_offer(999), FROM, &mut xids).is_empty());
        let mut broken = full_offer(999);
        broken[236] = 0;
        s.handle(&broken, FROM, &mut xids);
        assert_eq!(s.unrelated(), 2);
        let mut ours = full_offer(101);
        ours[236] = 0;
        s.handle(&ours, FROM, &mut xids);
        s.handle(&[1, 2, 3], FROM, &mut xids);
        let report = s.into_report("eth0", &[FirmwareKind::Bios, FirmwareKind::Ipxe], 3000);
        assert!(report.rows.is_empty());
        assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
        assert!(
            report.warnings[0].contains("no DHCP magic cookie"),
            "{:?}",
            report.warnings
        );
    }
}
