"""Many DHCP clients at once, through a relay, for the full-mode tests.

Usage: dhcp_relay_load.py RELAY_IP SERVER_IP MODE ARG SECONDS [RATE]
  MODE bind:   ARG = number of clients; each does DISCOVER/OFFER/REQUEST/ACK with its own MAC.
  MODE verify: ARG = a file of "mac ip" lines; each MAC does the exchange again, last first.
Acts as a relay agent (giaddr = RELAY_IP, from RELAY_IP:67 to SERVER_IP:67), so no broadcast
or raw socket is needed. Prints "ACK <mac> <ip>" for every DHCPACK the moment it arrives
(flushed), "NAK <mac>" for a NAK. Runs at most SECONDS; 32 exchanges in flight; every
exchange is retried at most 5 times. RATE (exchanges started per second) paces the start of
new exchanges; 0 or absent: as fast as replies come.
"""
import select
import socket
import struct
import sys
import time

relay, server, mode, arg, seconds = sys.argv[1:6]
seconds = float(seconds)
rate = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
if mode == "bind":
    macs = [bytes([0x02, 0xd0, 0, 0, i >> 8, i & 0xFF]) for i in range(int(arg))]
else:
    # In reverse order, so a server that lost its leases cannot hand out the same addresses
    # again by allocating in the same order.
    macs = [bytes.fromhex(line.split()[0].replace(":", "")) for line in open(arg) if line.strip()]
    macs.reverse()

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind((relay, 67))
sock.setblocking(False)


def message(msg_type, mac, xid, requested=None, server_id=None):
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 1, xid, 0, 0, bytes(4), bytes(4),
                        bytes(4), socket.inet_aton(relay), mac + bytes(10), bytes(64), bytes(128))
    opts = bytes([53, 1, msg_type])
    if requested:
        opts += bytes([50, 4]) + socket.inet_aton(requested)
    if server_id:
        opts += bytes([54, 4]) + socket.inet_aton(server_id)
    return bootp + bytes([99, 130, 83, 99]) + opts + bytes([255])


def parse(data):
    if len(data) < 240:
        return None
    xid = struct.unpack("!I", data[4:8])[0]
    yiaddr = socket.inet_ntoa(data[16:20])
    i, msg_type, sid = 240, None, None
    while i + 1 < len(data) and data[i] != 255:
        if data[i] == 0:
            i += 1
            continue
        code, length = data[i], data[i + 1]
        if code == 53:
            msg_type = data[i + 2]
        if code == 54:
            sid = socket.inet_ntoa(data[i + 2:i + 6])
        i += 2 + length
    return xid, msg_type, yiaddr, sid


pending = list(range(len(macs)))
inflight = {}  # xid -> [index, stage, sent_at, tries]
started_at = time.monotonic()
deadline = started_at + seconds
started = 0
next_xid = 0x70000000
done = 0
while time.monotonic() < deadline and (pending or inflight):
    while pending and len(inflight) < 32:
        if rate > 0 and started >= rate * (time.monotonic() - started_at):
            break
        started += 1
        idx = pending.pop(0)
        next_xid += 1
        inflight[next_xid] = [idx, "discover", time.monotonic(), 1]
        sock.sendto(message(1, macs[idx], next_xid), (server, 67))
    ready, _, _ = select.select([sock], [], [], 0.05)
    if ready:
        try:
            data, _ = sock.recvfrom(2048)
        except BlockingIOError:
            data = b""
        parsed = parse(data)
        if parsed and parsed[0] in inflight:
            xid, msg_type, yiaddr, sid = parsed
            idx = inflight[xid][0]
            mac = ":".join(f"{b:02x}" for b in macs[idx])
            if msg_type == 2:
                inflight[xid] = [idx, "request", time.monotonic(), 1]
                inflight[xid].append((yiaddr, sid))
                sock.sendto(message(3, macs[idx], xid, yiaddr, sid), (server, 67))
            elif msg_type == 5:
                print(f"ACK {mac} {yiaddr}", flush=True)
                del inflight[xid]
                done += 1
            elif msg_type == 6:
                print(f"NAK {mac}", flush=True)
                del inflight[xid]
    now = time.monotonic()
    for xid, ex in list(inflight.items()):
        if now - ex[2] > 1.0:
            if ex[3] >= 5:
                del inflight[xid]
                continue
            ex[2], ex[3] = now, ex[3] + 1
            if ex[1] == "discover":
                sock.sendto(message(1, macs[ex[0]], xid), (server, 67))
            else:
                sock.sendto(message(3, macs[ex[0]], xid, *ex[4]), (server, 67))
print(f"DONE {done}", flush=True)
