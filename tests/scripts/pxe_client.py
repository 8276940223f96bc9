"""A PXE ROM's DHCP client, built with scapy, for the integration tests.

Usage: pxe_client.py IFACE KIND [SECONDS [MAC]]
KIND: bios | uefi | http | ipxe | plain.  Broadcasts one DHCPDISCOVER as that firmware sends it
from a fixed test MAC (or MAC) and prints every DHCPOFFER seen within SECONDS (default 3) as one JSON
object per line: src, yiaddr, siaddr, file, vendor (option 60), msg_type, server_id, and
after_secs (when it arrived, counted from the DISCOVER).
Sends only on IFACE (a test veth) to the broadcast address.
"""
import json
import sys
import time

from scapy.all import BOOTP, DHCP, IP, UDP, AsyncSniffer, Ether, conf, sendp

conf.verb = 0
iface, kind = sys.argv[1], sys.argv[2]
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
MACS = {"bios": "52:54:00:aa:00:01", "uefi": "52:54:00:aa:00:07", "http": "52:54:00:aa:00:16",
        "ipxe": "52:54:00:aa:00:0e", "plain": "52:54:00:aa:00:ff"}
VENDORS = {"bios": b"PXEClient:Arch:00000:UNDI:002001", "uefi": b"PXEClient:Arch:00007:UNDI:003016",
           "http": b"HTTPClient:Arch:00016:UNDI:003001", "ipxe": b"PXEClient:Arch:00000:UNDI:002001"}
ARCH = {"bios": 0, "uefi": 7, "http": 16, "ipxe": 0}
mac = sys.argv[4] if len(sys.argv) > 4 else MACS[kind]
chaddr = bytes.fromhex(mac.replace(":", "")) + bytes(10)
xid = 0x5e5e0000 + ARCH.get(kind, 255)

options = [("message-type", "discover")]
if kind != "plain":
    options += [(93, ARCH[kind].to_bytes(2, "big")), (94, b"\x01\x02\x01"),
                (97, b"\x00" + bytes(range(16))), ("vendor_class_id", VENDORS[kind]),
                ("param_req_list", [1, 3, 43, 60, 66, 67])]
if kind == "ipxe":
    options += [(77, b"iPXE"), (175, b"\x13\x01\x01")]
options.append("end")

frame = (Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
         / UDP(sport=68, dport=67) / BOOTP(chaddr=chaddr, xid=xid, flags=0x8000)
         / DHCP(options=options))


def opt(pkt, name):
    for o in pkt[DHCP].options:
        if isinstance(o, tuple) and o[0] == name:
            return o[1]
    return None


sniffer = AsyncSniffer(iface=iface, filter="udp and dst port 68", store=True)
sniffer.start()
time.sleep(0.3)
sent_at = time.time()
sendp(frame, iface=iface)
time.sleep(seconds)
packets = sniffer.stop()
for p in packets:
    if BOOTP not in p or p[BOOTP].xid != xid or p[BOOTP].op != 2:
        continue
    vendor = opt(p, "vendor_class_id")
    server_id = opt(p, "server_id")
    print(json.dumps({
        "src": p[IP].src,
        "yiaddr": p[BOOTP].yiaddr,
        "siaddr": p[BOOTP].siaddr,
        "file": p[BOOTP].file.rstrip(b"\0").decode(errors="replace"),
        "vendor": vendor.decode(errors="replace") if vendor else None,
        "msg_type": opt(p, "message-type"),
        "server_id": server_id,
        "after_secs": round(float(p.time) - sent_at, 3),
    }), flush=True)
