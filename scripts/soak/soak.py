#!/usr/bin/env python3
"""The soak's driver (scripts/soak.sh starts the processes and calls this).

Python 3 standard library only. Phases, in order:

  warmup    one subscribe and one publish through every node, so the
            connections a node opens lazily (its Redis command connection)
            exist before the baseline;
  baseline  idle, sampled for BASELINE_SECONDS: the per-node baseline is the
            median of these samples;
  load      --duration seconds of churning WebSocket clients (connect,
            subscribe with recovery, read, leave cleanly, abruptly or with a
            reset), waves of slow consumers (never read: must be dropped
            with 3008), a publish flood through the HTTP API, and Redis
            killed (SIGKILL) and started again on the same port every
            --redis-every seconds;
  settle    the load stopped: until every node reports 0 connections, and
            its open files and tasks are back at baseline (bounded);
  after     idle, sampled for AFTER_SECONDS: compared with the baseline.

Every second, per node: VmRSS and open files from /proc/PID, and from
/metrics crier_tasks, crier_connections (summed over transports),
crier_clients and crier_disconnects_total{code="3008"}. Writes
OUT/samples.csv, OUT/soak.svg, OUT/summary.json and OUT/summary.md, and
exits 1 when a check fails (a node died, RSS, open files or tasks not back,
slow consumers not dropped, load that did not happen).
"""

import argparse
import asyncio
import base64
import csv
import http.client
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

BASELINE_SECONDS = 8
AFTER_SECONDS = 8
SETTLE_LIMIT = 90  # seconds for connections to reach 0 and fds/tasks to return
WAIT = 10  # bound on one handshake, reply, or Redis start

# RSS may end above its baseline by the larger of these (see
# docs/reliability.md, "Soak"): memory freed after the load's peak stays
# with glibc's allocator (per-thread arenas keep freed pages they cannot
# trim from the top), so RSS after a load sits near the load's peak, which
# was 1-2 MiB above baseline here. A leak grows with the work done instead:
# 1 KiB kept per churned connection would add about 6 MiB per node over the
# 10-minute run (about 18,000 connections over 3 nodes).
RSS_TOLERANCE_MIB = 8
RSS_TOLERANCE_FRACTION = 0.25
# Open files and tasks must come back exactly; a node may hold this many
# more (a Redis connection re-opened a moment before the end).
FD_TOLERANCE = 0
TASK_TOLERANCE = 0

CHURN_CHANNELS = [f"soak:churn{i}" for i in range(12)]
FLOOD_CHANNEL = "flood"


def log(*args):
    print(f"[soak {time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


# ----- a minimal WebSocket client (RFC 6455, client side) -------------------


def ws_frame(opcode, payload):
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class Frames:
    """Incremental server-frame parser: feed bytes, take whole frames."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data

    def take(self):
        out = []
        while True:
            b = self.buf
            if len(b) < 2:
                return out
            opcode = b[0] & 0x0F
            n = b[1] & 0x7F
            at = 2
            if n == 126:
                if len(b) < 4:
                    return out
                n = struct.unpack("!H", b[2:4])[0]
                at = 4
            elif n == 127:
                if len(b) < 10:
                    return out
                n = struct.unpack("!Q", b[2:10])[0]
                at = 10
            if len(b) < at + n:
                return out
            out.append((opcode, bytes(b[at : at + n])))
            del b[: at + n]


async def ws_open(host, port, source, rcvbuf=None):
    """Opens a WebSocket to /connection/websocket; returns (reader, writer,
    leftover bytes after the handshake)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), WAIT)
    except BaseException:
        sock.close()
        raise
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /connection/websocket HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    if not head.startswith(b"HTTP/1.1 101"):
        writer.close()
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return reader, writer


def messages(payload):
    for line in payload.decode().split("\n"):
        if line.strip():
            yield json.loads(line)


# ----- load ------------------------------------------------------------------


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def add(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n

    def snapshot(self):
        with self.lock:
            return dict(self.c)


STATS = Stats()
# channel -> (offset, epoch) last seen by any churn client: the next client
# on that channel recovers from it.
POSITIONS = {}


async def churn_session(node, stop):
    host, port = node
    source = f"127.0.0.{random.randint(2, 9)}"
    reader, writer = await ws_open(host, port, source)
    frames = Frames()
    try:
        channels = random.sample(CHURN_CHANNELS, random.randint(1, 3))
        cmds = [{"id": 1, "connect": {"name": "soak"}}]
        for i, ch in enumerate(channels):
            sub = {"channel": ch}
            if ch in POSITIONS and random.random() < 0.7:
                off, epoch = POSITIONS[ch]
                sub.update({"recover": True, "offset": off, "epoch": epoch})
            cmds.append({"id": 2 + i, "subscribe": sub})
        writer.write(ws_frame(1, "\n".join(json.dumps(c) for c in cmds).encode()))
        hold = random.uniform(0.2, 3.0)
        deadline = time.monotonic() + hold
        replies = 0
        while time.monotonic() < deadline and not stop.is_set():
            try:
                data = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if not data:
                STATS.add("churn_closed_by_server")
                return
            frames.feed(data)
            for opcode, payload in frames.take():
                if opcode == 8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    STATS.add(f"churn_close_{code}")
                    return
                if opcode == 9:
                    writer.write(ws_frame(10, payload))
                    continue
                if opcode != 1:
                    continue
                for m in messages(payload):
                    if m == {}:
                        writer.write(ws_frame(1, b"{}"))
                    elif "error" in m:
                        STATS.add(f"churn_error_{m['error'].get('code')}")
                    elif "subscribe" in m:
                        replies += 1
                        STATS.add("churn_subscribed")
                        if m["subscribe"].get("recovered"):
                            STATS.add("churn_recovered")
                    elif "push" in m:
                        push = m["push"]
                        pub = push.get("pub")
                        if pub is not None and "offset" in pub:
                            STATS.add("churn_publications")
                            epoch = POSITIONS.get(push["channel"], (0, ""))[1]
                            POSITIONS[push["channel"]] = (pub["offset"], epoch)
                        unsub = push.get("unsubscribe")
                        if unsub is not None:
                            STATS.add(f"churn_unsubscribe_{unsub.get('code')}")
            await writer.drain()
        # Leave in one of three ways a real client does.
        how = random.choice(("close", "eof", "reset"))
        STATS.add(f"churn_leave_{how}")
        if how == "close":
            writer.write(ws_frame(8, struct.pack("!H", 1000)))
            await writer.drain()
        elif how == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def epochs(nodes, stop):
    """Keeps POSITIONS' epochs current: a subscribe reply names the epoch.
    (Churn sessions record offsets; a recovery from another epoch simply
    says recovered: false, which is fine too.)"""
    while not stop.is_set():
        try:
            reader, writer = await ws_open(*random.choice(nodes), "127.0.0.1")
            cmds = [{"id": 1, "connect": {}}] + [
                {"id": 2 + i, "subscribe": {"channel": ch}} for i, ch in enumerate(CHURN_CHANNELS)
            ]
            writer.write(ws_frame(1, "\n".join(json.dumps(c) for c in cmds).encode()))
            frames = Frames()
            got = 0
            end = time.monotonic() + WAIT
            while got < len(CHURN_CHANNELS) and time.monotonic() < end:
                data = await asyncio.wait_for(reader.read(65536), WAIT)
                if not data:
                    break
                frames.feed(data)
                for opcode, payload in frames.take():
                    if opcode != 1:
                        continue
                    for m in messages(payload):
                        sub = m.get("subscribe")
                        if sub is not None:
                            got += 1
                            ch = CHURN_CHANNELS[m["id"] - 2]
                            if sub.get("epoch"):
                                POSITIONS[ch] = (sub.get("offset", 0), sub["epoch"])
            writer.write(ws_frame(8, struct.pack("!H", 1000)))
            writer.close()
        except (OSError, asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        for _ in range(50):
            if stop.is_set():
                return
            await asyncio.sleep(0.1)


async def churn_loop(nodes, stop):
    while not stop.is_set():
        try:
            await churn_session(random.choice(nodes), stop)
            STATS.add("churn_sessions")
        except (OSError, asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError) as e:
            STATS.add(f"churn_failed_{type(e).__name__}")
            await asyncio.sleep(0.2)


async def slow_consumer(node, hold, results, stop):
    """Subscribes to the flood channel with a 4 KiB receive buffer, reads
    nothing for `hold` seconds, then drains to see how the server ended it."""
    host, port = node
    try:
        reader, writer = await ws_open(host, port, f"127.0.0.{random.randint(2, 9)}", rcvbuf=4096)
    except (OSError, asyncio.TimeoutError, ConnectionError) as e:
        results.append(("connect_failed", str(e)))
        return
    cmds = [{"id": 1, "connect": {}}, {"id": 2, "subscribe": {"channel": FLOOD_CHANNEL}}]
    writer.write(ws_frame(1, "\n".join(json.dumps(c) for c in cmds).encode()))
    frames = Frames()
    subscribed = False
    end = time.monotonic() + WAIT
    try:
        while not subscribed and time.monotonic() < end:
            data = await asyncio.wait_for(reader.read(4096), WAIT)
            if not data:
                break
            frames.feed(data)
            for opcode, payload in frames.take():
                if opcode == 1 and any(m.get("id") == 2 and "subscribe" in m for m in messages(payload)):
                    subscribed = True
                if opcode == 1 and any(m.get("id") == 2 and "error" in m for m in messages(payload)):
                    results.append(("subscribe_refused", payload.decode()[:100]))
                    writer.close()
                    return
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        pass
    if not subscribed:
        results.append(("not_subscribed", ""))
        writer.close()
        return
    # Never reading: the point of a slow consumer. asyncio would go on
    # reading the socket into its own buffer (up to 2 MiB) without this.
    writer.transport.pause_reading()
    await asyncio.sleep(hold)
    writer.transport.resume_reading()
    # The flood stops with the load: a consumer whose hold ran past it may
    # not have been sent enough to overflow.
    load_ended = stop.is_set()
    # Drain: how did the server end it?
    outcome = "still_open"
    saw_2500 = False
    end = time.monotonic() + 15
    try:
        while time.monotonic() < end:
            data = await asyncio.wait_for(reader.read(1 << 20), max(0.01, end - time.monotonic()))
            if not data:
                outcome = "eof"
                break
            frames.feed(data)
            done = False
            for opcode, payload in frames.take():
                if opcode == 8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    outcome = f"close_{code}"
                    done = True
                    break
                if opcode == 1 and b'"unsubscribe"' in payload and b"2500" in payload:
                    saw_2500 = True
            if done:
                break
    except (asyncio.TimeoutError,):
        pass
    except (OSError, ConnectionError) as e:
        outcome = f"error_{type(e).__name__}"
    results.append((outcome + ("+2500" if saw_2500 else "") + ("+load_ended" if load_ended else ""), ""))
    writer.close()


async def slow_waves(nodes, stop, every, hold, results):
    while not stop.is_set():
        # One per node, all at once.
        await asyncio.gather(*(slow_consumer(n, hold, results, stop) for n in nodes))
        STATS.add("slow_waves")
        for _ in range(int(every * 10)):
            if stop.is_set():
                return
            await asyncio.sleep(0.1)


def flood(nodes, api_key, rate, size, stop, seq):
    """One thread publishing through the HTTP API, paced to `rate`/s."""
    pad = "x" * max(0, size - 40)
    conns = {}
    interval = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        node = random.choice(nodes)
        if random.random() < 0.8:
            channel = FLOOD_CHANNEL
        else:
            channel = random.choice(CHURN_CHANNELS)
        n = next(seq)
        body = json.dumps({"channel": channel, "data": {"n": n, "p": pad}})
        try:
            c = conns.get(node)
            if c is None:
                c = conns[node] = http.client.HTTPConnection(*node, timeout=WAIT)
            c.request("POST", "/api/publish", body, {"X-API-Key": api_key, "Content-Type": "application/json"})
            r = c.getresponse()
            answer = json.loads(r.read() or b"{}")
            if r.status != 200:
                STATS.add(f"publish_http_{r.status}")
            elif "error" in answer:
                STATS.add(f"publish_error_{answer['error'].get('code')}")
            else:
                STATS.add("publish_ok")
        except (OSError, http.client.HTTPException, ValueError) as e:
            STATS.add(f"publish_failed_{type(e).__name__}")
            c = conns.pop(node, None)
            if c:
                c.close()
            time.sleep(0.05)
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1:
            next_at = time.monotonic()  # fell behind (Redis down): do not burst
    for c in conns.values():
        c.close()


# ----- Redis -----------------------------------------------------------------


class Redis:
    """The soak's redis-server: killed by PID and started on the same port.
    Its PID is kept in a file so that soak.sh's trap can stop it."""

    def __init__(self, port, pidfile, logfile):
        self.port = port
        self.pidfile = pidfile
        self.logfile = logfile
        self.proc = None
        self.restarts = 0

    def pid(self):
        with open(self.pidfile) as f:
            return int(f.read().strip())

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def restart(self):
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(WAIT)
        else:
            end = time.monotonic() + WAIT
            while os.path.exists(f"/proc/{pid}") and _state(pid) != "Z" and time.monotonic() < end:
                time.sleep(0.02)
        log_f = open(self.logfile, "a")
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=log_f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with open(self.pidfile, "w") as f:
            f.write(str(self.proc.pid))
        end = time.monotonic() + WAIT
        while not self.ping():
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server did not come back on port {self.port}")
            time.sleep(0.02)
        self.restarts += 1


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


# ----- sampling ----------------------------------------------------------------


class Node:
    def __init__(self, index, port, pid):
        self.index = index
        self.port = port
        self.pid = pid
        self.conn = None  # one keep-alive connection: constant in every sample

    def alive(self):
        return _state(self.pid) not in ("gone", "Z")

    def metrics(self):
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)
                self.conn.request("GET", "/metrics")
                r = self.conn.getresponse()
                return parse_metrics(r.read().decode())
            except (OSError, http.client.HTTPException):
                if self.conn:
                    self.conn.close()
                self.conn = None
        return {}

    def sample(self):
        rss = None
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
            fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return None
        m = self.metrics()
        return {
            "rss_kib": rss,
            "fds": fds,
            "tasks": int(m.get("crier_tasks", -1)),
            "connections": int(m.get("crier_connections", -1)),
            "clients": int(m.get("crier_clients", -1)),
            "subscriptions": int(m.get("crier_subscriptions", -1)),
            "disconnects_3008": int(m.get('crier_disconnects_total{code="3008"}', 0)),
        }


def parse_metrics(text):
    """Sums a family's samples over labels, except the ones named in full."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            v = float(value)
        except ValueError:
            continue
        base = name.split("{", 1)[0]
        if name.startswith('crier_disconnects_total{code="3008"}'):
            out[name] = v
        out[base] = out.get(base, 0) + v
    return out


class Sampler:
    def __init__(self, nodes, out):
        self.nodes = nodes
        self.rows = []
        self.phase = "warmup"
        self.t0 = time.monotonic()
        self.marks = []  # (t, label): Redis restarts
        self.phases = []  # (t, phase)
        self.stop = threading.Event()
        self.file = open(os.path.join(out, "samples.csv"), "w", newline="")
        self.csv = csv.writer(self.file)
        self.csv.writerow(
            ["t_s", "phase", "node", "rss_kib", "fds", "tasks", "connections", "clients", "subscriptions", "disconnects_3008"]
        )
        self.lock = threading.Lock()

    def now(self):
        return time.monotonic() - self.t0

    def set_phase(self, phase):
        with self.lock:
            self.phase = phase
            self.phases.append((self.now(), phase))
        log(f"phase {phase}")

    def mark(self, label):
        with self.lock:
            self.marks.append((self.now(), label))

    def once(self):
        t = self.now()
        for n in self.nodes:
            s = n.sample()
            if s is None:
                continue
            row = dict(t=t, phase=self.phase, node=n.index, **s)
            with self.lock:
                self.rows.append(row)
            self.csv.writerow(
                [f"{t:.1f}", row["phase"], n.index, s["rss_kib"], s["fds"], s["tasks"], s["connections"],
                 s["clients"], s["subscriptions"], s["disconnects_3008"]]
            )
        self.file.flush()

    def run(self):
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.once()
            next_at += 1.0
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def latest(self, node):
        with self.lock:
            for r in reversed(self.rows):
                if r["node"] == node:
                    return r
        return None

    def of(self, phase, node):
        with self.lock:
            return [r for r in self.rows if r["phase"] == phase and r["node"] == node]


# ----- the plot ----------------------------------------------------------------


def plot(sampler, path, title):
    W, H = 960, 720
    left, right, top = 80, 20, 50
    panels = [("rss_kib", "RSS (MiB)", 1 / 1024), ("fds", "open files", 1), ("tasks", "tokio tasks", 1)]
    ph = (H - top - 40) / len(panels)
    rows = sampler.rows
    if not rows:
        return
    tmax = max(r["t"] for r in rows) or 1
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    phase_fill = {"warmup": "#f4f4f4", "baseline": "#e3f2e3", "load": "#fdeede", "settle": "#eef0fb", "after": "#e3f2e3"}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
    ]
    x = lambda t: left + (W - left - right) * t / tmax
    # Phase bands and labels, across all panels.
    bounds = sampler.phases + [(tmax, "")]
    for (t, phase), (t2, _) in zip(bounds, bounds[1:]):
        out.append(
            f'<rect x="{x(t):.1f}" y="{top}" width="{max(0, x(t2) - x(t)):.1f}" height="{H - top - 40}" '
            f'fill="{phase_fill.get(phase, "#fff")}"/>'
        )
        narrow = x(t2) - x(t) < 60
        label_y = top - 6 - (12 if narrow and phase in ("baseline", "after") else 0)
        out.append(f'<text x="{(x(t) + x(t2)) / 2:.1f}" y="{label_y}" text-anchor="middle">{phase}</text>')
    for t, _ in sampler.marks:
        out.append(
            f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{H - 40}" stroke="#888" stroke-dasharray="2,3"/>'
        )
    for i, (key, label, scale) in enumerate(panels):
        y0 = top + i * ph + 8
        h = ph - 24
        vals = [r[key] * scale for r in rows if r[key] is not None and r[key] >= 0]
        lo, hi = min(vals), max(vals)
        if hi == lo:
            hi = lo + 1
        pad = (hi - lo) * 0.08
        lo, hi = max(0, lo - pad), hi + pad
        y = lambda v: y0 + h - h * (v - lo) / (hi - lo)
        out.append(f'<rect x="{left}" y="{y0}" width="{W - left - right}" height="{h}" fill="none" stroke="#444"/>')
        out.append(
            f'<text x="18" y="{y0 + h / 2}" transform="rotate(-90 18 {y0 + h / 2})" text-anchor="middle">{label}</text>'
        )
        for k in range(5):
            v = lo + (hi - lo) * k / 4
            out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
            out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{W - right}" y2="{y(v):.1f}" stroke="#ddd"/>')
        for node in sorted({r["node"] for r in rows}):
            pts = " ".join(
                f"{x(r['t']):.1f},{y(r[key] * scale):.1f}" for r in rows if r["node"] == node and r[key] is not None and r[key] >= 0
            )
            out.append(f'<polyline fill="none" stroke="{colours[node % len(colours)]}" stroke-width="1.2" points="{pts}"/>')
    # Time axis and legend.
    for k in range(11):
        t = tmax * k / 10
        out.append(f'<text x="{x(t):.1f}" y="{H - 24}" text-anchor="middle">{t:.0f}</text>')
    out.append(f'<text x="{W - right}" y="{H - 8}" text-anchor="end">seconds (dashed: Redis killed and restarted)</text>')
    for node in sorted({r["node"] for r in rows}):
        lx = left + node * 80
        out.append(f'<line x1="{lx}" y1="{H - 12}" x2="{lx + 20}" y2="{H - 12}" stroke="{colours[node % len(colours)]}" stroke-width="2"/>')
        out.append(f'<text x="{lx + 24}" y="{H - 8}">node {node + 1}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


# ----- the run -----------------------------------------------------------------


async def warmup(nodes, api_key):
    for host, port in nodes:
        reader, writer = await ws_open(host, port, "127.0.0.1")
        writer.write(ws_frame(1, b'{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":"soak:warm"}}'))
        frames = Frames()
        end = time.monotonic() + WAIT
        ok = False
        while not ok and time.monotonic() < end:
            data = await asyncio.wait_for(reader.read(65536), WAIT)
            if not data:
                break
            frames.feed(data)
            for opcode, payload in frames.take():
                if opcode == 1 and any(m.get("id") == 2 and "subscribe" in m for m in messages(payload)):
                    ok = True
        if not ok:
            raise RuntimeError(f"warm-up subscribe on port {port} failed")
        c = http.client.HTTPConnection(host, port, timeout=WAIT)
        c.request("POST", "/api/publish", json.dumps({"channel": "soak:warm", "data": {}}),
                  {"X-API-Key": api_key})
        answer = json.loads(c.getresponse().read())
        c.close()
        if "error" in answer:
            raise RuntimeError(f"warm-up publish on port {port}: {answer}")
        writer.write(ws_frame(8, struct.pack("!H", 1000)))
        writer.close()


async def load(args, nodes, sampler, redis):
    stop = asyncio.Event()
    tstop = threading.Event()
    seq = iter(range(1, 1 << 62))
    seq_lock = threading.Lock()

    def next_seq():
        with seq_lock:
            return next(seq)

    class Seq:
        def __next__(self):
            return next_seq()

    threads = [
        threading.Thread(target=flood, args=(nodes, args.api_key, args.rate / args.publishers, args.size, tstop, Seq()), daemon=True)
        for _ in range(args.publishers)
    ]
    for t in threads:
        t.start()
    slow_results = []
    tasks = [asyncio.create_task(churn_loop(nodes, stop)) for _ in range(args.churn)]
    tasks.append(asyncio.create_task(epochs(nodes, stop)))
    tasks.append(asyncio.create_task(slow_waves(nodes, stop, args.slow_every, args.slow_hold, slow_results)))
    start = time.monotonic()
    next_restart = start + args.redis_every
    end = start + args.duration
    loop = asyncio.get_running_loop()
    while time.monotonic() < end:
        if args.redis_every > 0 and time.monotonic() >= next_restart and end - time.monotonic() > 5:
            sampler.mark("redis restart")
            await loop.run_in_executor(None, redis.restart)
            log(f"redis restarted ({redis.restarts})")
            next_restart += args.redis_every
        dead = [n.index + 1 for n in sampler.nodes if not n.alive()]
        if dead:
            log(f"node(s) {dead} died during the load")
            break
        await asyncio.sleep(0.2)
    stop.set()
    tstop.set()
    # Slow consumers in their hold finish it and drain (bounded: hold + 15 s).
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), args.slow_hold + 40)
    for t in threads:
        t.join(WAIT + 5)
    return slow_results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ports", required=True, help="comma-separated HTTP ports of the nodes")
    p.add_argument("--pids", required=True, help="comma-separated PIDs of the nodes, same order")
    p.add_argument("--api-key", required=True)
    p.add_argument("--redis-port", type=int, required=True)
    p.add_argument("--redis-pidfile", required=True)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--redis-every", type=float, default=30)
    p.add_argument("--churn", type=int, default=48, help="concurrent churning clients")
    p.add_argument("--rate", type=float, default=300, help="publications/s through the API, in total")
    p.add_argument("--publishers", type=int, default=2)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--slow-every", type=float, default=15)
    p.add_argument("--slow-hold", type=float, default=10)
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="crier soak")
    args = p.parse_args()

    ports = [int(x) for x in args.ports.split(",")]
    pids = [int(x) for x in args.pids.split(",")]
    nodes = [("127.0.0.1", port) for port in ports]
    redis = Redis(args.redis_port, args.redis_pidfile, os.path.join(args.out, "redis.log"))
    sampler_nodes = [Node(i, port, pid) for i, (port, pid) in enumerate(zip(ports, pids))]
    sampler = Sampler(sampler_nodes, args.out)
    sampler.set_phase("warmup")
    th = threading.Thread(target=sampler.run, daemon=True)
    th.start()

    asyncio.run(warmup(nodes, args.api_key))
    sampler.set_phase("baseline")
    time.sleep(BASELINE_SECONDS)
    sampler.set_phase("load")
    slow_results = asyncio.run(load(args, nodes, sampler, redis))

    sampler.set_phase("settle")
    baseline = {}
    for n in sampler_nodes:
        rows = sampler.of("baseline", n.index)
        baseline[n.index] = {k: statistics.median(r[k] for r in rows) for k in ("rss_kib", "fds", "tasks")}
    settle_start = time.monotonic()
    settled = False
    while time.monotonic() - settle_start < SETTLE_LIMIT:
        latest = [sampler.latest(n.index) for n in sampler_nodes]
        if all(
            r is not None
            and r["connections"] == 0
            and r["fds"] <= baseline[r["node"]]["fds"] + FD_TOLERANCE
            and r["tasks"] <= baseline[r["node"]]["tasks"] + TASK_TOLERANCE
            for r in latest
        ) and all(n.alive() for n in sampler_nodes):
            settled = True
            break
        if not all(n.alive() for n in sampler_nodes):
            break
        time.sleep(0.5)
    settle_seconds = time.monotonic() - settle_start
    sampler.set_phase("after")
    time.sleep(AFTER_SECONDS)
    sampler.stop.set()
    th.join(5)

    # ----- judge --------------------------------------------------------------
    failures = []
    summary = {"nodes": [], "load": STATS.snapshot(), "redis_restarts": redis.restarts,
               "settle_seconds": round(settle_seconds, 1), "settled": settled,
               "rss_tolerance": f"max({RSS_TOLERANCE_MIB} MiB, {RSS_TOLERANCE_FRACTION:.0%} of baseline)"}
    slow = {}
    for outcome, _ in slow_results:
        slow[outcome] = slow.get(outcome, 0) + 1
    summary["slow_consumers"] = slow
    for n in sampler_nodes:
        b = baseline[n.index]
        after_rows = sampler.of("after", n.index)
        load_rows = sampler.of("load", n.index)
        if not n.alive():
            failures.append(f"node {n.index + 1} (pid {n.pid}) is not running")
        if not after_rows:
            failures.append(f"node {n.index + 1}: no samples after the load")
            continue
        a = {k: statistics.median(r[k] for r in after_rows) for k in ("rss_kib", "fds", "tasks")}
        peak = {k: max((r[k] for r in load_rows), default=0) for k in ("rss_kib", "fds", "tasks", "connections")}
        d3008 = max(r["disconnects_3008"] for r in sampler.rows if r["node"] == n.index)
        summary["nodes"].append({"node": n.index + 1, "baseline": b, "peak": peak, "after": a, "disconnects_3008": d3008})
        allowed = max(RSS_TOLERANCE_MIB * 1024, b["rss_kib"] * RSS_TOLERANCE_FRACTION)
        if a["rss_kib"] > b["rss_kib"] + allowed:
            failures.append(
                f"node {n.index + 1}: RSS {a['rss_kib'] / 1024:.1f} MiB after, baseline {b['rss_kib'] / 1024:.1f} MiB "
                f"(allowed + {allowed / 1024:.0f} MiB)"
            )
        if a["fds"] > b["fds"] + FD_TOLERANCE:
            failures.append(f"node {n.index + 1}: {a['fds']:.0f} open files after, {b['fds']:.0f} at baseline")
        if a["tasks"] > b["tasks"] + TASK_TOLERANCE:
            failures.append(f"node {n.index + 1}: {a['tasks']:.0f} tasks after, {b['tasks']:.0f} at baseline")
        last = after_rows[-1]
        if last["connections"] != 0 or last["clients"] != 0:
            failures.append(f"node {n.index + 1}: {last['connections']} connections, {last['clients']} clients left")
    load_stats = summary["load"]
    if load_stats.get("churn_sessions", 0) < args.duration:
        failures.append(f"only {load_stats.get('churn_sessions', 0)} churn sessions: the load did not happen")
    if load_stats.get("publish_ok", 0) < args.duration * args.rate * 0.3:
        failures.append(f"only {load_stats.get('publish_ok', 0)} publications accepted: the flood did not happen")
    if args.redis_every > 0 and args.duration > args.redis_every + 5 and redis.restarts == 0:
        failures.append("Redis was never restarted")
    dropped = sum(v for k, v in slow.items() if k.startswith("close_3008"))
    excused = lambda k: "2500" in k or "load_ended" in k
    cut = sum(v for k, v in slow.items() if excused(k) and not k.startswith("close_3008"))
    others = {k: v for k, v in slow.items() if not k.startswith("close_3008") and not excused(k)}
    total_3008 = sum(x["disconnects_3008"] for x in summary["nodes"])
    if dropped == 0:
        failures.append(f"no slow consumer was closed with 3008: {slow}")
    if others:
        failures.append(f"slow consumers not dropped with 3008 (nor cut by a Redis restart's 2500 or the end of the load): {others}")
    if total_3008 < dropped:
        failures.append(f"nodes count {total_3008} disconnects 3008, clients saw {dropped}")
    summary["slow_consumers_dropped_3008"] = dropped
    summary["phases"] = sampler.phases
    summary["redis_restarts_at"] = [t for t, _ in sampler.marks]
    summary["slow_consumers_cut_by_2500_or_end"] = cut
    summary["failures"] = failures

    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    lines = ["| node | RSS baseline | RSS peak | RSS after | open files (baseline/peak/after) | tasks (baseline/peak/after) | 3008 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for x in summary["nodes"]:
        b, pk, a = x["baseline"], x["peak"], x["after"]
        lines.append(
            f"| {x['node']} | {b['rss_kib'] / 1024:.1f} MiB | {pk['rss_kib'] / 1024:.1f} MiB | {a['rss_kib'] / 1024:.1f} MiB "
            f"| {b['fds']:.0f} / {pk['fds']:.0f} / {a['fds']:.0f} | {b['tasks']:.0f} / {pk['tasks']:.0f} / {a['tasks']:.0f} "
            f"| {x['disconnects_3008']} |"
        )
    lines.append("")
    lines.append(f"Load: {json.dumps(load_stats, sort_keys=True)}")
    lines.append(f"Redis restarts: {redis.restarts}; slow consumers: {json.dumps(slow, sort_keys=True)}; "
                 f"settled in {settle_seconds:.1f} s")
    lines.append("Result: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(sampler, os.path.join(args.out, "soak.svg"), args.title)
    print("\n".join(lines))
    return 1 if failures else 0


def replot(directory, title):
    """Draws DIR/soak.svg again from DIR/samples.csv and DIR/summary.json."""

    class Saved:
        pass

    saved = Saved()
    with open(os.path.join(directory, "samples.csv")) as f:
        saved.rows = [
            {"t": float(r["t_s"]), "phase": r["phase"], "node": int(r["node"]),
             **{k: int(r[k]) for k in ("rss_kib", "fds", "tasks", "connections")}}
            for r in csv.DictReader(f)
        ]
    with open(os.path.join(directory, "summary.json")) as f:
        summary = json.load(f)
    saved.phases = [tuple(p) for p in summary["phases"]]
    saved.marks = [(t, "redis restart") for t in summary["redis_restarts_at"]]
    plot(saved, os.path.join(directory, "soak.svg"), title)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--replot"]:
        replot(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "crier soak")
        sys.exit(0)
    sys.exit(main())
