# TFTP client scenarios for the pxe-tests integration tests (run inside the client namespace).
#
#   get SERVER[:PORT] FILE OUT [--opt NAME=VALUE]... [--probe-abort same|new] [--dally SECS]
#       Reads FILE as firmware does: RFC 2347 options, RFC 7440 receiver (ACK at the end of a
#       window, ACK of the last in-order block on a gap or a timeout), block-number rollover.
#       --probe-abort: first a request whose OACK is answered with ERROR 8, then the same request
#       again from the same socket (same) or a new one (new), as UEFI firmware does.
#       Prints one JSON line: {"bytes": N, "oack": {...}, "seconds": S}.
#   errors SERVER NAME...
#       Sends one read request per NAME; prints a JSON map NAME -> [code, message] (or null).
#   scale SERVER FILE COUNT
#       Opens COUNT transfers at once (one socket each) and never ACKs; once every one has its
#       first block, sends one request more and prints what it got, as JSON.
#   relay PORT SERVER LOSS REORDER SECS
#       A lossy UDP relay on PORT towards SERVER:69 (each client gets its own upstream socket):
#       drops LOSS of the datagrams each way and delays REORDER of them by 5 ms so that later
#       ones overtake them. Runs SECS seconds. Used where tc netem is not available.
#
# Every loop is bounded in count and time; addresses come from the test (198.18.0.0/15).
import heapq, json, os, random, resource, selectors, socket, struct, sys, time

OP_RRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK = 1, 3, 4, 5, 6
MAX_SECONDS = 60


def rrq(name, opts):
    out = struct.pack("!H", OP_RRQ) + name.encode() + b"\0octet\0"
    for k, v in opts:
        out += k.encode() + b"\0" + v.encode() + b"\0"
    return out


def ack(block):
    return struct.pack("!HH", OP_ACK, block & 0xFFFF)


def error(code, msg):
    return struct.pack("!HH", OP_ERROR, code) + msg.encode() + b"\0"


def parse_oack(body):
    parts = body.split(b"\0")
    return {parts[i].decode().lower(): parts[i + 1].decode() for i in range(0, len(parts) - 1, 2)}


def address(server):
    host, _, port = server.partition(":")
    return (host, int(port or 69))


def get(server, name, out_path, opts, probe_abort, dally):
    server = address(server)
    started = time.monotonic()
    deadline = started + MAX_SECONDS
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.5)
    req = rrq(name, opts)
    probe_oack = None
    if probe_abort:
        for _ in range(10):
            sock.sendto(req, server)
            try:
                pkt, peer = sock.recvfrom(70000)
            except socket.timeout:
                continue
            op = struct.unpack("!H", pkt[:2])[0]
            if op != OP_OACK:
                raise SystemExit(f"probe: expected OACK, got {pkt[:40]!r}")
            probe_oack = parse_oack(pkt[2:])
            sock.sendto(error(8, "tsize probe done"), peer)
            break
        else:
            raise SystemExit("probe: no OACK")
        if probe_abort == "new":
            sock.close()
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(0.5)
    sock.sendto(req, server)
    blksize, window = 512, 1
    oack = {}
    data = bytearray()
    expected = 1  # absolute number of the next block
    in_window = 0
    peer = None
    timeouts = 0
    while time.monotonic() < deadline:
        try:
            pkt, addr = sock.recvfrom(70000)
        except socket.timeout:
            timeouts += 1
            if timeouts > 40:
                raise SystemExit(f"no progress after block {expected - 1}")
            if peer is None:
                sock.sendto(req, server)
            else:
                sock.sendto(ack(expected - 1), peer)
            continue
        if peer is None:
            peer = addr
        elif addr != peer:
            sock.sendto(error(5, "unknown transfer ID"), addr)
            continue
        timeouts = 0
        op = struct.unpack("!H", pkt[:2])[0]
        if op == OP_OACK:
            if expected == 1:
                oack = parse_oack(pkt[2:])
                blksize = int(oack.get("blksize", "512"))
                window = int(oack.get("windowsize", "1"))
                sock.sendto(ack(0), peer)
            continue
        if op == OP_ERROR:
            code = struct.unpack("!H", pkt[2:4])[0]
            raise SystemExit(f"server error {code}: {pkt[4:-1].decode(errors='replace')}")
        if op != OP_DATA:
            raise SystemExit(f"unexpected opcode {op}")
        block = struct.unpack("!H", pkt[2:4])[0]
        if block != expected & 0xFFFF:
            # A gap or a duplicate: acknowledge what we have in order (RFC 7440).
            sock.sendto(ack(expected - 1), peer)
            in_window = 0
            continue
        payload = pkt[4:]
        data += payload
        expected += 1
        in_window += 1
        if len(payload) < blksize:
            sock.sendto(ack(expected - 1), peer)
            # Answer a retransmitted last block (our last ACK lost) for a while.
            end = time.monotonic() + dally
            while (left := end - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    pkt, addr = sock.recvfrom(70000)
                except socket.timeout:
                    break
                if addr == peer and pkt[:2] == b"\0\3":
                    sock.sendto(ack(expected - 1), peer)
            break
        if in_window >= window:
            sock.sendto(ack(expected - 1), peer)
            in_window = 0
    else:
        raise SystemExit("transfer did not finish in time")
    with open(out_path, "wb") as f:
        f.write(data)
    print(json.dumps({"bytes": len(data), "oack": oack, "probe_oack": probe_oack,
                      "seconds": round(time.monotonic() - started, 3)}))


def errors(server, names):
    result = {}
    for name in names:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(1.0)
        sock.sendto(rrq(name, []), (server, 69))
        try:
            pkt, _ = sock.recvfrom(70000)
        except socket.timeout:
            result[name] = None
            continue
        op, code = struct.unpack("!HH", pkt[:4])
        result[name] = [code, pkt[4:-1].decode(errors="replace")] if op == OP_ERROR else ["op", op]
        sock.close()
    print(json.dumps(result))


def scale(server, name, count):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 256)), hard))
    sel = selectors.DefaultSelector()
    socks = []
    req = rrq(name, [("blksize", "512")])
    started = time.monotonic()
    for i in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind(("0.0.0.0", 0))
        sel.register(s, selectors.EVENT_READ, i)
        socks.append(s)
    for i, s in enumerate(socks):
        s.sendto(req, (server, 69))
        if i % 500 == 499:
            time.sleep(0.005)
    answered = set()
    last_send = time.monotonic()
    deadline = time.monotonic() + 20
    while len(answered) < count and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            try:
                while True:
                    pkt = key.fileobj.recv(2048)
                    # The OACK (blksize asked) or, without options, DATA 1.
                    if pkt[:2] == b"\0\6" or pkt[:4] == b"\0\3\0\1":
                        answered.add(key.data)
            except BlockingIOError:
                pass
        if time.monotonic() - last_send > 0.5:
            # Requests the listener dropped: ask again (a repeated request is answered once).
            for i, s in enumerate(socks):
                if i not in answered:
                    s.sendto(req, (server, 69))
            last_send = time.monotonic()
    all_started = time.monotonic() - started
    extra = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    extra.settimeout(2.0)
    extra.sendto(req, (server, 69))
    try:
        pkt, _ = extra.recvfrom(2048)
        op, code = struct.unpack("!HH", pkt[:4])
        reply = [op, code, pkt[4:-1].decode(errors="replace")]
    except socket.timeout:
        reply = None
    print(json.dumps({"answered": len(answered), "seconds_to_all": round(all_started, 3),
                      "extra_reply": reply}), flush=True)
    # Hold the sockets until the test has read the metrics (it kills us).
    time.sleep(float(os.environ.get("PXE_TESTS_HOLD_SECS", "10")))


def relay(port, server, loss, reorder, seconds):
    rng = random.Random(7)
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("0.0.0.0", port))
    front.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(front, selectors.EVENT_READ, None)
    up_of = {}      # client address -> upstream socket
    client_of = {}  # upstream socket -> [client address, server address]
    pending = []    # heap of (due, seq, socket, bytes, address)
    seq = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        timeout = 0.05
        if pending:
            timeout = max(0.0, min(timeout, pending[0][0] - time.monotonic()))
        for key, _ in sel.select(timeout=timeout):
            s = key.fileobj
            for _ in range(64):
                try:
                    pkt, addr = s.recvfrom(70000)
                except BlockingIOError:
                    break
                if s is front:
                    up = up_of.get(addr)
                    if up is None or pkt[:2] == b"\0\1":
                        if up is not None:
                            sel.unregister(up)
                            up.close()
                        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.setblocking(False)
                        sel.register(up, selectors.EVENT_READ, None)
                        up_of[addr] = up
                        client_of[up] = [addr, (server, 69)]
                    out_sock, dest = up, client_of[up][1]
                else:
                    entry = client_of.get(s)
                    if entry is None:
                        continue
                    if entry[1][1] == 69:
                        entry[1] = addr  # the transfer's port
                    out_sock, dest = front, entry[0]
                if rng.random() < loss:
                    continue
                delay = 0.005 if rng.random() < reorder else 0.0
                seq += 1
                heapq.heappush(pending, (time.monotonic() + delay, seq, out_sock, pkt, dest))
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, s, pkt, dest = heapq.heappop(pending)
            try:
                s.sendto(pkt, dest)
            except OSError:
                pass


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "get":
        server, name, out = args[:3]
        opts, probe, dally = [], None, 0.0
        rest = args[3:]
        while rest:
            flag, value, rest = rest[0], rest[1], rest[2:]
            if flag == "--opt":
                k, v = value.split("=", 1)
                opts.append((k, v))
            elif flag == "--probe-abort":
                probe = value
            elif flag == "--dally":
                dally = float(value)
        get(server, name, out, opts, probe, dally)
    elif cmd == "errors":
        errors(args[0], args[1:])
    elif cmd == "scale":
        scale(args[0], args[1], int(args[2]))
    elif cmd == "relay":
        relay(int(args[0]), args[1], float(args[2]), float(args[3]), float(args[4]))
    else:
        raise SystemExit(f"unknown command {cmd}")


main()
