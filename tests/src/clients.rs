//! Requests sent from the client namespace as a PXE ROM would send them.

use std::process::Output;

use pxe_common::firmware::{self, Persona};

use crate::TestNet;

/// Sends, from the client namespace: COUNT PXE DHCPDISCOVERs broadcast to port 67 (bound to the
/// interface, as DHCP clients do: the namespace has no default route), COUNT DHCPREQUESTs
/// unicast to SERVER:4011, and COUNT TFTP read requests (each from its own port) to SERVER:69;
/// then reads replies for up to a second so that none meets a closed port.
/// argv: IFNAME CLIENT_IP SERVER_IP COUNT FIRMWARE_OPTIONS (hex: the ROM's options 60, 93, 94).
const PXE_PROBES_PY: &str = r#"
import select, socket, struct, sys, time
ifname, client, server, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
firmware_options = bytes.fromhex(sys.argv[5])
SO_BINDTODEVICE = 25

def dhcp(msg_type, xid, ciaddr):
    chaddr = bytes.fromhex("525400123456") + bytes(10)
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
                        socket.inet_aton(ciaddr), bytes(4), bytes(4), bytes(4), chaddr,
                        bytes(64), bytes(128))
    options = (bytes([53, 1, msg_type]) + firmware_options
               + bytes([97, 17, 0]) + bytes(range(16)) + bytes([255]))
    return bootp + bytes([99, 130, 83, 99]) + options

d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
d.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
d.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
d.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
d.bind(("0.0.0.0", 68))
for i in range(count):
    d.sendto(dhcp(1, 0x70780000 + i, "0.0.0.0"), ("255.255.255.255", 67))
for i in range(count):
    d.sendto(dhcp(3, 0x70790000 + i, client), (server, 4011))
socks = [d]
for i in range(count):
    t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t.bind((client, 0))
    t.sendto(b"\x00\x01pxe-tests-no-such-file\x00octet\x00", (server, 69))
    socks.append(t)
replies = 0
deadline = time.monotonic() + 1.0
while (left := deadline - time.monotonic()) > 0:
    ready, _, _ = select.select(socks, [], [], left)
    for s in ready:
        s.recv(65535)
        replies += 1
print(f"sent {count} per class, {replies} replies")
"#;

/// Sends `count` PXE DHCPDISCOVERs (broadcast to port 67), `count` boot-server DHCPREQUESTs
/// (to the server's port 4011) and `count` TFTP read requests (to port 69) from the client
/// namespace; stdout says how many replies came back within a second.
pub fn send_pxe_probes(net: &TestNet, count: u32) -> Output {
    let count = count.to_string();
    net.client(&[
        "python3",
        "-c",
        PXE_PROBES_PY,
        net.client_if(),
        &net.client_ip().to_string(),
        &net.server_ip().to_string(),
        &count,
        &hex(&firmware_options(&firmware::BIOS_PXE)),
    ])
}

/// Options 60, 93 and 94 of `persona`, encoded (code, length, value), in that order.
fn firmware_options(persona: &Persona) -> Vec<u8> {
    let mut b = Vec::new();
    for (code, value) in [
        (60, persona.vendor_class.as_bytes()),
        (93, &persona.arch_bytes()[..]),
        (94, &persona.ndi[..]),
    ] {
        b.push(code);
        b.push(u8::try_from(value.len()).expect("a short option"));
        b.extend_from_slice(value);
    }
    b
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
