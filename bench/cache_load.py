#!/usr/bin/env python3
"""bench/cache_load.py — the origin and the load generators of bench/collapse.sh
and bench/cache_rss.sh (python3, standard library only, asyncio, raw sockets).

  origin   --port P [--delay-ms D] [--body B]
      An HTTP/1.1 origin (keep-alive). Every GET answers 200 with
      `Cache-Control: max-age=3600`, its head after D ms, then a body of B
      bytes (a fixed pseudo-random 1 MiB block repeated, so the same size is
      the same bytes). The query may override them: `d=` (ms), `b=` (bytes),
      `rate=` (bytes/s: the body is paced, for the slow fill). Requests and
      body bytes sent are counted per path+query; `GET /__stats` (never
      counted) lists them, one line each: `count bytes_sent done path`.

  burst    --port P --path PATH --n N [--tag-header H] [--expect-bytes B] [--procs K]
      Opens N keep-alive connections first (connect time is not measured),
      split over K processes (default 2), waits --settle seconds, then all
      processes write their requests at once and record each client's time
      from its own write to its last byte (and first byte). Prints one `BURST key=value ...` line, a `TAGS` line (the values
      of header H, normalised, with counts) and, with --lat-file, every
      latency in ms.

  hold     --port P --path PATH --n N --ready-file F --release-file G
      Opens N keep-alive connections, each makes one GET and reads the whole
      answer, then prints `HELD ...`, creates F and keeps them all idle until
      G exists (or --max-s), then closes them.

  slowread --port P --path PATH --n N --rate R --release-file G
      N readers of one object, each reading at most R bytes/s (small
      SO_RCVBUF so the kernel does not buffer for them): the first one
      alone, the others --stagger-ms later (so they join its fill). They
      read until G exists (or --max-s) and print `SLOWREAD ...`.
"""
import argparse
import asyncio
import os
import random
import re
import resource
import socket
import sys
import time
from urllib.parse import parse_qs, urlsplit

BLOCK_SIZE = 1 << 20


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


# ---- origin ----------------------------------------------------------------------

class Origin:
    def __init__(self, delay_ms, body):
        self.delay = delay_ms / 1000.0
        self.body = body
        self.block = random.Random(20261202).randbytes(BLOCK_SIZE)
        self.stats = {}  # path -> [count, bytes_sent, done]

    async def handle(self, reader, writer):
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3:
                    return
                method, target = parts[0], parts[1]
                close = False
                clen = 0
                for l in lines[1:]:
                    k, _, v = l.partition(":")
                    k = k.strip().lower()
                    if k == "connection" and "close" in v.lower():
                        close = True
                    elif k == "content-length":
                        clen = int(v.strip() or 0)
                if clen:
                    await reader.readexactly(clen)
                if not await self.respond(method, target, writer, close):
                    return
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def respond(self, method, target, writer, close):
        u = urlsplit(target)
        if u.path == "/__stats":
            out = "".join("%d %d %d %s\n" % (s[0], s[1], s[2], p) for p, s in sorted(self.stats.items()))
            data = out.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: no-store\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(data) + data)
            await writer.drain()
            return True
        q = parse_qs(u.query)
        delay = float(q["d"][0]) / 1000.0 if "d" in q else self.delay
        size = int(q["b"][0]) if "b" in q else self.body
        rate = float(q["rate"][0]) if "rate" in q else 0.0
        st = self.stats.setdefault(target, [0, 0, 0])
        st[0] += 1
        if delay > 0:
            await asyncio.sleep(delay)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Cache-Control: max-age=3600\r\nContent-Length: %d\r\n%s\r\n"
                     % (size, b"Connection: close\r\n" if close else b""))
        if method == "HEAD":
            await writer.drain()
            st[2] += 1
            return True
        mv = memoryview(self.block)
        sent = 0
        t0 = time.monotonic()
        chunk = BLOCK_SIZE
        if rate > 0:
            chunk = max(16384, min(BLOCK_SIZE, int(rate / 100)))  # ~10 ms of data per write
        while sent < size:
            off = sent % BLOCK_SIZE
            n = min(chunk, size - sent, BLOCK_SIZE - off)
            writer.write(mv[off:off + n])
            sent += n
            st[1] += n
            await writer.drain()
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        st[2] += 1
        return True


async def run_origin(a):
    raise_nofile()
    o = Origin(a.delay_ms, a.body)
    srv = await asyncio.start_server(o.handle, a.host, a.port, backlog=4096, limit=65536)
    async with srv:
        await srv.serve_forever()


# ---- an HTTP/1.1 client connection (raw, keep-alive, Content-Length or chunked) ----

# Every connection reads into this one buffer (callbacks never overlap), so
# a 100 KB body costs no allocation and no copy beyond recv_into.
RBUF = memoryview(bytearray(1 << 18))
READS = 0  # reads by all connections (how finely the servers' bytes arrive)


class Client(asyncio.BufferedProtocol):
    """One keep-alive connection; `request()` sends one GET and `done` (a
    future) resolves when the whole answer is in. Reading can be paced."""

    def __init__(self, loop, tag_header=None):
        self.loop = loop
        self.tag_header = tag_header.lower().encode() if tag_header else None
        self.transport = None
        self.connected = loop.create_future()
        self.closed = False
        self.reset()

    def reset(self):
        self.buf = bytearray()
        self.in_body = False
        self.status = 0
        self.tag = None
        self.clen = -1
        self.chunked = False
        self.need = 0
        self.got = 0  # body bytes
        self.total = 0  # bytes received of this answer
        self.t0 = self.t_first = self.t_last = 0.0
        self.done = self.loop.create_future()
        self.err = None

    def connection_made(self, t):
        self.transport = t
        if not self.connected.done():
            self.connected.set_result(True)

    def connection_lost(self, exc):
        self.closed = True
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("closed"))
        if not self.done.done():
            self.err = "closed after %d bytes" % self.total
            self.done.set_result(False)

    def request(self, host, path):
        self.reset()
        self.t0 = time.monotonic()
        self.transport.write(("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: refract-bench\r\n\r\n"
                              % (path, host)).encode())

    def get_buffer(self, sizehint):
        return RBUF

    def buffer_updated(self, nbytes):
        global READS
        READS += 1
        if self.done.done():
            return
        now = time.monotonic()
        if not self.total:
            self.t_first = now
        self.total += nbytes
        if self.in_body and not self.chunked:  # the common case: count the bytes
            self.got += nbytes
            if self.got >= self.clen:
                self.finish(now)
            return
        data = bytes(RBUF[:nbytes])
        if not self.in_body:
            self.buf += data
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(self.buf[:i]).split(b"\r\n")
            rest = bytes(self.buf[i + 4:])
            self.buf = bytearray()
            try:
                self.status = int(head[0].split(b" ")[1])
            except (IndexError, ValueError):
                self.fail("bad status line")
                return
            for l in head[1:]:
                k, _, v = l.partition(b":")
                k = k.strip().lower()
                v = v.strip()
                if k == b"content-length":
                    self.clen = int(v)
                elif k == b"transfer-encoding" and b"chunked" in v.lower():
                    self.chunked = True
                elif self.tag_header is not None and k == self.tag_header:
                    self.tag = v.decode("latin-1")
            self.in_body = True
            if not self.chunked and self.clen < 0:
                self.fail("neither Content-Length nor chunked")
                return
            data = rest
        if self.chunked:
            self.buf += data
            self.parse_chunks(now)
        else:
            self.got += len(data)
            if self.got >= self.clen:
                self.finish(now)

    def parse_chunks(self, now):
        # self.buf: bytes not consumed yet; self.need: chunk data still due
        # (> 0), or -1 for the CRLF after a chunk's data
        while True:
            if self.need > 0:
                n = min(self.need, len(self.buf))
                self.got += n
                del self.buf[:n]
                self.need -= n
                if self.need:
                    return
                self.need = -1
                continue
            if self.need == -1:
                if len(self.buf) < 2:
                    return
                del self.buf[:2]
                self.need = 0
                continue
            i = self.buf.find(b"\r\n")
            if i < 0:
                return
            size = int(bytes(self.buf[:i]).split(b";")[0], 16)
            del self.buf[:i + 2]
            if size == 0:
                self.finish(now)  # trailers (none expected) are ignored
                return
            self.need = size

    def fail(self, why):
        self.err = why
        if not self.done.done():
            self.done.set_result(False)

    def finish(self, now):
        self.t_last = now
        if not self.done.done():
            self.done.set_result(True)


async def open_clients(loop, host, port, n, tag=None, parallel=256, rcvbuf=0):
    """n connected Clients; at most `parallel` connects in flight."""
    sem = asyncio.Semaphore(parallel)
    clients = [None] * n

    async def one(i):
        async with sem:
            for attempt in range(5):
                try:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if rcvbuf:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                    s.setblocking(False)
                    await loop.sock_connect(s, (host, port))
                    _, c = await loop.create_connection(lambda: Client(loop, tag), sock=s)
                    clients[i] = c
                    return
                except OSError:
                    s.close()
                    await asyncio.sleep(0.2 * (attempt + 1))
            raise ConnectionError("cannot connect to %s:%d" % (host, port))

    await asyncio.gather(*(one(i) for i in range(n)))
    return clients


def norm_tag(h, v):
    if v is None:
        return "(none)"
    if h == "x-varnish":
        return "x-varnish:%d-id" % len(v.split())
    return re.sub(r";\s*ttl=-?\d+", "", v).strip()


# ---- burst -------------------------------------------------------------------------

async def burst_part(a, n, ready_fd, go_fd):
    """One process's share of a burst: opens n connections, says ready,
    waits for go, sends, and returns what each client saw."""
    global READS
    loop = asyncio.get_running_loop()
    clients = await open_clients(loop, a.host, a.port, n, a.tag_header)
    await asyncio.sleep(a.settle)
    hosthdr = a.host_header or "%s:%d" % (a.host, a.port)
    os.write(ready_fd, b"R")
    if os.read(go_fd, 1) != b"G":  # every process starts at once (a pipe barrier)
        return None
    READS = 0
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t_start = time.monotonic()
    for c in clients:
        c.request(hosthdr, a.path)
    t_sent = time.monotonic()
    await asyncio.wait([c.done for c in clients], timeout=a.timeout)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    tagh = a.tag_header.lower() if a.tag_header else ""
    out = {"t_start": t_start, "t_sent": t_sent, "reads": READS,
           "cpu_ms": (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) * 1000, "clients": []}
    for c in clients:
        ok = c.done.done() and c.done.result()
        err = None
        if not ok:
            err = c.err or "timeout after %.0fs (%d bytes)" % (a.timeout, c.total)
        elif c.status != 200:
            err = "status %d" % c.status
        elif a.expect_bytes >= 0 and c.got != a.expect_bytes:
            err = "body %d bytes, expected %d" % (c.got, a.expect_bytes)
        out["clients"].append([c.status, norm_tag(tagh, c.tag), err,
                               (c.t_last - c.t0) * 1000 if ok else None,
                               (c.t_first - c.t0) * 1000 if ok else None, c.t_last if ok else None])
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0.05)
    return out


def run_burst(a):
    """Splits the N clients over --procs processes (one asyncio loop each:
    one Python process receiving every body would be the bottleneck), lets
    them all open their connections, then starts them at the same moment.
    CLOCK_MONOTONIC is system-wide, so their times compare."""
    import json
    raise_nofile()
    procs = max(1, min(a.procs, a.n))
    shares = [a.n // procs + (1 if i < a.n % procs else 0) for i in range(procs)]
    kids = []
    for n in shares:
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        res_r, res_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            for fd in (ready_r, go_w, res_r):
                os.close(fd)
            rc = 0
            try:
                out = asyncio.run(burst_part(a, n, ready_w, go_r))
                data = json.dumps(out).encode()
                while data:
                    data = data[os.write(res_w, data):]
            except BaseException as e:  # the parent reports it
                os.write(ready_w, b"E")
                sys.stderr.write("burst process: %r\n" % (e,))
                rc = 1
            os._exit(rc)
        for fd in (ready_w, go_r, res_w):
            os.close(fd)
        kids.append((pid, ready_r, go_w, res_r))
    failed = False
    for _, ready_r, _, _ in kids:
        if os.read(ready_r, 1) != b"R":
            failed = True
    for _, _, go_w, _ in kids:
        os.write(go_w, b"G" if not failed else b"X")
    parts = []
    for pid, ready_r, go_w, res_r in kids:
        chunks = []
        while True:
            d = os.read(res_r, 1 << 16)
            if not d:
                break
            chunks.append(d)
        _, st = os.waitpid(pid, 0)
        for fd in (ready_r, go_w, res_r):
            os.close(fd)
        if st != 0 or not chunks:
            failed = True
            continue
        parts.append(json.loads(b"".join(chunks)))
    if failed:
        print("BURST_ERROR a load-generator process failed", flush=True)
        sys.exit(2)
    t_start = min(p["t_start"] for p in parts)
    t_sent = max(p["t_sent"] for p in parts)
    allc = [c for p in parts for c in p["clients"]]
    lat = sorted(c[3] for c in allc if c[3] is not None)
    ttfb = sorted(c[4] for c in allc if c[4] is not None)
    last = max((c[5] for c in allc if c[5] is not None), default=t_start)
    errors, tags, statuses = {}, {}, {}
    for st, tag, err, _, _, _ in allc:
        statuses[st] = statuses.get(st, 0) + 1
        tags[tag] = tags.get(tag, 0) + 1
        if err:
            errors[err] = errors.get(err, 0) + 1
    nerr = sum(errors.values())
    print("BURST n=%d ok=%d errors=%d p50_ms=%.1f p99_ms=%.1f max_ms=%.1f min_ms=%.1f "
          "ttfb_p50_ms=%.1f ttfb_p99_ms=%.1f send_span_ms=%.1f makespan_ms=%.1f client_cpu_ms=%.0f procs=%d "
          "reads=%d statuses=%s"
          % (a.n, a.n - nerr, nerr, pct(lat, 50), pct(lat, 99), lat[-1] if lat else float("nan"),
             lat[0] if lat else float("nan"), pct(ttfb, 50), pct(ttfb, 99), (t_sent - t_start) * 1000,
             (last - t_start) * 1000, sum(p["cpu_ms"] for p in parts), procs, sum(p["reads"] for p in parts),
             ",".join("%d:%d" % kv for kv in sorted(statuses.items()))))
    print("TAGS " + " | ".join("%s = %d" % (k, v) for k, v in sorted(tags.items(), key=lambda kv: -kv[1])))
    if errors:
        print("ERRORS " + " | ".join("%s x%d" % kv for kv in sorted(errors.items(), key=lambda kv: -kv[1])[:5]))
    if a.lat_file:
        with open(a.lat_file, "w") as f:
            for st, tag, err, l, t, _ in allc:
                if l is not None:
                    f.write("%.3f %.3f %s\n" % (l, t, tag))


# ---- hold --------------------------------------------------------------------------

async def wait_file(path, max_s):
    t = time.monotonic()
    while not os.path.exists(path) and time.monotonic() - t < max_s:
        await asyncio.sleep(0.05)


async def run_hold(a):
    lim = raise_nofile()
    if lim < a.n + 64:
        print("HOLD_ERROR open-file limit %d is below %d connections" % (lim, a.n), flush=True)
        sys.exit(2)
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    clients = await open_clients(loop, a.host, a.port, a.n, a.tag_header)
    hosthdr = "%s:%d" % (a.host, a.port)
    sem = asyncio.Semaphore(256)
    ok = 0
    bad = {}

    async def one(c):
        nonlocal ok
        async with sem:
            c.request(hosthdr, a.path)
            try:
                r = await asyncio.wait_for(asyncio.shield(c.done), a.timeout)
            except asyncio.TimeoutError:
                r = False
            if r and c.status == 200 and (a.expect_bytes < 0 or c.got == a.expect_bytes):
                ok += 1
            else:
                k = c.err or "status %d, %d bytes" % (c.status, c.got)
                bad[k] = bad.get(k, 0) + 1

    await asyncio.gather(*(one(c) for c in clients))
    t1 = time.monotonic()
    tags = {}
    for c in clients:
        t = norm_tag(a.tag_header.lower() if a.tag_header else "", c.tag)
        tags[t] = tags.get(t, 0) + 1
    open_now = sum(1 for c in clients if not c.closed)
    print("HELD n=%d ok=%d open=%d secs=%.1f tags=%s%s" % (
        a.n, ok, open_now, t1 - t0, " | ".join("%s: %d" % kv for kv in tags.items()),
        (" errors=" + ";".join("%s:%d" % kv for kv in bad.items())) if bad else ""), flush=True)
    with open(a.ready_file, "w") as f:
        f.write("%d\n" % ok)
    await wait_file(a.release_file, a.max_s)
    still = sum(1 for c in clients if not c.closed)
    print("RELEASED still_open=%d" % still, flush=True)
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0.2)


# ---- slowread ----------------------------------------------------------------------

class Paced:
    """Paces one Client's reading to `rate` bytes/s with pause/resume_reading."""

    def __init__(self, loop, c, rate):
        self.loop, self.c, self.rate = loop, c, rate
        self.start = None
        self.paused = False
        orig = c.buffer_updated

        def buffer_updated(nbytes):
            orig(nbytes)
            if self.start is None:
                self.start = time.monotonic()
            ahead = self.c.total / self.rate - (time.monotonic() - self.start)
            if ahead > 0.005 and not self.paused and not self.c.done.done():
                self.paused = True
                self.c.transport.pause_reading()
                self.loop.call_later(ahead, self.resume)
        c.buffer_updated = buffer_updated

    def resume(self):
        self.paused = False
        if not self.c.closed:
            self.c.transport.resume_reading()


async def run_slowread(a):
    raise_nofile()
    loop = asyncio.get_running_loop()
    clients = await open_clients(loop, a.host, a.port, a.n, a.tag_header, rcvbuf=a.rcvbuf)
    for c in clients:
        Paced(loop, c, a.rate)
    hosthdr = "%s:%d" % (a.host, a.port)
    t0 = time.monotonic()
    clients[0].request(hosthdr, a.path)
    await asyncio.sleep(a.stagger_ms / 1000.0)
    for c in clients[1:]:
        c.request(hosthdr, a.path)
    print("SLOWREAD_STARTED n=%d" % a.n, flush=True)
    await wait_file(a.release_file, a.max_s)
    secs = time.monotonic() - t0
    got = sorted(c.total for c in clients)
    tags = {}
    for c in clients:
        t = norm_tag(a.tag_header.lower() if a.tag_header else "", c.tag)
        tags[t] = tags.get(t, 0) + 1
    statuses = {}
    for c in clients:
        statuses[c.status] = statuses.get(c.status, 0) + 1
    closed = sum(1 for c in clients if c.closed and not c.done.done())
    print("SLOWREAD n=%d secs=%.1f min_mb=%.1f median_mb=%.1f max_mb=%.1f closed_early=%d statuses=%s tags=%s" % (
        a.n, secs, got[0] / 1e6, got[len(got) // 2] / 1e6, got[-1] / 1e6, closed,
        ",".join("%d:%d" % kv for kv in sorted(statuses.items())),
        " | ".join("%s: %d" % kv for kv in tags.items())), flush=True)
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    await asyncio.sleep(0.2)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("origin")
    o.add_argument("--host", default="127.0.0.1")
    o.add_argument("--port", type=int, required=True)
    o.add_argument("--delay-ms", type=float, default=0)
    o.add_argument("--body", type=int, default=1024)
    for name in ("burst", "hold", "slowread"):
        s = sub.add_parser(name)
        s.add_argument("--host", default="127.0.0.1")
        s.add_argument("--port", type=int, required=True)
        s.add_argument("--path", required=True)
        s.add_argument("--n", type=int, required=True)
        s.add_argument("--tag-header", default=None)
        s.add_argument("--expect-bytes", type=int, default=-1)
        s.add_argument("--timeout", type=float, default=30)
        if name == "burst":
            s.add_argument("--settle", type=float, default=1.0)
            s.add_argument("--host-header", default=None)
            s.add_argument("--lat-file", default=None)
            s.add_argument("--procs", type=int, default=min(2, os.cpu_count() or 1),
                           help="processes sharing the clients (default: 2, or 1 on one CPU)")
        if name in ("hold", "slowread"):
            s.add_argument("--release-file", required=True)
            s.add_argument("--max-s", type=float, default=120)
        if name == "hold":
            s.add_argument("--ready-file", required=True)
        if name == "slowread":
            s.add_argument("--rate", type=float, required=True)
            s.add_argument("--stagger-ms", type=float, default=300)
            s.add_argument("--rcvbuf", type=int, default=65536)
    a = p.parse_args()
    fn = {"origin": run_origin, "hold": run_hold, "slowread": run_slowread}.get(a.cmd)
    try:
        if fn is None:
            run_burst(a)
        else:
            asyncio.run(fn(a))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
