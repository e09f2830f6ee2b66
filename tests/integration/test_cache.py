"""The edge cache, end to end against real processes: hits and misses and
what they carry (Cache-Status, Age, stored headers), request collapsing
(1,000 concurrent misses, streaming to waiters, TTL-0 sharing, private
responses), expiry, Range / conditionals / HEAD from the cache,
invalidation, request directives, TTL rules and configuration, the disk
store (restart, damaged files, kill -9 mid-fill, one gateway per
directory, memory_only), failed fills, and slow readers sharing a large
fill.

The origin is harness.ControlledOrigin: /_ctl/<name>?... paths whose
headers, timing (hold/gate until the test releases them) and failures the
test chooses, plus everything harness.OriginHandler serves. Every test on
the module's stack uses its own paths, so the cache keys never overlap.
"""
import asyncio
import email.utils
import glob
import hashlib
import json
import os
import re
import resource
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest

import harness
from harness import pattern_bytes, sha256

MB = 1 << 20
WEB = "web.test"

# 1,000 concurrent clients: this process holds their sockets and the
# gateways it starts (which inherit the limit) hold theirs.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft != resource.RLIM_INFINITY and _soft < 8192:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, _hard) if _hard != resource.RLIM_INFINITY else 8192, _hard))


# ------------------------------------------------------------------ helpers ---

def hget(r, name):
    """A response header from a requests.Response or a Raw."""
    if isinstance(r, Raw):
        return r.headers.get(name.lower())
    return r.headers.get(name)


def cstatus(r):
    return hget(r, "Cache-Status")


def cs_parse(value):
    """'refract; fwd=miss; stored; ttl=5' -> {'fwd': 'miss', 'stored': True, 'ttl': 5}."""
    assert value is not None, "no Cache-Status header"
    parts = [p.strip() for p in value.split(";")]
    assert parts[0] == "refract", value
    out = {}
    for p in parts[1:]:
        k, eq, v = p.partition("=")
        out[k] = (int(v) if k in ("ttl", "fwd-status") else v) if eq else True
    return out


def assert_miss_stored(r, ttl=None, fwd="miss", fwd_status=None):
    cs = cs_parse(cstatus(r))
    status = fwd_status or (r.status if isinstance(r, Raw) else r.status_code)
    assert cs.get("fwd") == fwd and cs.get("stored") is True and cs.get("fwd-status") == status, cstatus(r)
    assert "collapsed" not in cs and "hit" not in cs, cstatus(r)
    if ttl is not None:
        assert ttl - 2 <= cs["ttl"] <= ttl, f"ttl {cs['ttl']}, expected about {ttl}: {cstatus(r)}"
    return cs


def assert_hit(r, ttl=None):
    cs = cs_parse(cstatus(r))
    assert cs.get("hit") is True and "fwd" not in cs, cstatus(r)
    age = hget(r, "Age")
    assert age is not None and re.fullmatch(r"\d+", age), f"a hit without a valid Age: {dict(r.headers)}"
    if ttl is not None:
        assert ttl - 3 <= cs["ttl"] <= ttl, f"ttl {cs['ttl']}, expected about {ttl}: {cstatus(r)}"
    return cs


def ctl(name, **q):
    """A /_ctl/ path; keyword values become the query (lists repeat)."""
    return f"/_ctl/{name}" + ("?" + urllib.parse.urlencode(q, doseq=True) if q else "")


def objects(st):
    d = os.path.join(st.dir, "cache", "objects")
    return sorted(p for p in glob.glob(os.path.join(d, "**"), recursive=True) if os.path.isfile(p))


def tmp_files(st):
    d = os.path.join(st.dir, "cache", "tmp")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def object_file(st, path):
    """The one object file holding the key of `path` (the key is stored in
    the file: rf_store.h), or None."""
    hits = []
    for f in objects(st):
        with open(f, "rb") as fh:
            if ("\n" + path + "\n").encode() in fh.read(1 << 16):
                hits.append(f)
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


def wait_for(pred, timeout=10, what="condition", interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def settled_inflight(st, timeout=10):
    """The in-flight gauge once requests of earlier tests have finished
    (their clients may close a moment after the test moved on): counting
    from a stale base would let a burst be released before all of it
    arrived."""
    deadline = time.monotonic() + timeout
    v = st.metric("refract_http_requests_inflight") or 0
    while v > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        v = st.metric("refract_http_requests_inflight") or 0
    return v


def wait_inflight(st, n, timeout=20):
    last = [None]

    def ok():
        last[0] = st.metric("refract_http_requests_inflight")
        return last[0] is not None and last[0] >= n

    try:
        wait_for(ok, timeout, interval=0.05)
    except AssertionError:
        raise AssertionError(f"refract_http_requests_inflight is {last[0]}, never reached {n} in {timeout}s")


class Raw:
    """One HTTP/1.1 request on a raw socket, read incrementally: head, then
    body bytes as they come, and whether the body ended as its framing
    says (Content-Length reached, or the last chunk seen). keep=False
    counts and hashes the body instead of keeping it."""

    def __init__(self, port, path, host=WEB, method="GET", headers=None, rcvbuf=None, timeout=15, keep=True):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(timeout)
        self.s.connect(("127.0.0.1", port))
        h = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{h}\r\n".encode())
        self.method = method
        self.keep = keep
        self.buf = b""
        self.status = None
        self.headers = {}
        self.raw_head = b""
        self.length = None  # Content-Length, or None
        self.chunked = False
        self.body = bytearray()
        self.n = 0  # body bytes received
        self.sha = hashlib.sha256()
        self.closed = False
        self._chunk_left = 0
        self.ended = False
        self.bad_framing = None

    def _recv(self):
        b = self.s.recv(1 << 18)
        if not b:
            self.closed = True
        return b

    def _take(self, b):
        self.n += len(b)
        if self.keep:
            self.body += b
        else:
            self.sha.update(b)

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            b = self._recv()
            if not b:
                raise ConnectionError(f"closed before the head ended: {self.buf[:300]!r}")
            self.buf += b
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        self.raw_head = head
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            self.headers[k] = (self.headers[k] + ", " + v.strip()) if k in self.headers else v.strip()
        self.buf = b""
        if self.method == "HEAD" or self.status in (204, 304):
            self.length = 0
        elif "content-length" in self.headers:
            self.length = int(self.headers["content-length"])
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "")
        self._feed(rest)
        return self

    def _feed(self, data):
        self.buf += data
        if self.ended or self.bad_framing is not None:
            return
        if self.length is not None:
            take = self.buf[: self.length - self.n]
            self._take(take)
            self.buf = self.buf[len(take):]
            self.ended = self.n == self.length
        elif self.chunked:
            while True:
                if self._chunk_left > 0:
                    take = self.buf[: self._chunk_left]
                    self._take(take)
                    self.buf = self.buf[len(take):]
                    self._chunk_left -= len(take)
                    if self._chunk_left:
                        return
                    self._chunk_left = -1  # the CRLF after the chunk
                if self._chunk_left == -1:
                    if len(self.buf) < 2:
                        return
                    self.buf, self._chunk_left = self.buf[2:], 0
                line, sep, rest = self.buf.partition(b"\r\n")
                if not sep:
                    return
                try:
                    n = int(line.split(b";")[0], 16)
                except ValueError:
                    self.bad_framing = line  # h2o breaks a failed chunked stream on purpose
                    return
                if n == 0:
                    if rest.startswith(b"\r\n"):
                        self.ended = True
                    return
                self.buf, self._chunk_left = rest, n
        else:
            self._take(self.buf)
            self.buf = b""

    def _more(self, deadline, what):
        self.s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            self._feed(self._recv())
        except ConnectionResetError:
            self.closed = True
        except socket.timeout:
            raise AssertionError(f"{what}: only {self.n} body bytes") from None

    def read_until(self, n, timeout=10):
        """Reads until at least n body bytes arrived (or the body ended)."""
        deadline = time.monotonic() + timeout
        while self.n < n and not self.ended and not self.closed:
            self._more(deadline, f"waiting {timeout}s for {n} bytes")
        return self

    def read_all(self, timeout=30, pace=None):
        """Reads to the end of the body or the connection; pace: at most
        that many bytes/s on average."""
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        while not self.ended and not self.closed:
            self._more(deadline, f"body not done within {timeout}s")
            if pace:
                ahead = self.n / pace - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        return self

    def close(self):
        self.s.close()


def raw_get(port, path, host=WEB, method="GET", headers=None, timeout=15):
    """A whole exchange with Connection: close; .trailing holds whatever
    came after the end of the body until the server closed."""
    r = Raw(port, path, host, method, dict(headers or {}, Connection="close"), timeout=timeout)
    try:
        r.head().read_all(timeout)
        deadline = time.monotonic() + 5
        while not r.closed and time.monotonic() < deadline:
            r.s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                r.buf += r._recv()
            except (ConnectionResetError, socket.timeout):
                break
        r.trailing = r.buf
    finally:
        r.close()
    return r


# ------------------------------------------------------------------ fixtures ---

@pytest.fixture(scope="module")
def root(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("cache-origin"))
    for name, size in (("old.bin", 50000), ("recent.bin", 3000), ("new.bin", 2000)):
        with open(os.path.join(d, name), "wb") as f:
            f.write(pattern_bytes(size, seed=size))
    subprocess.run(["vips", "black", os.path.join(d, "img.jpg"), "64", "48"], check=True, timeout=30)
    with open(os.path.join(d, "bad.jpg"), "wb") as f:
        f.write(b"NOT AN IMAGE " * 100)
    day = time.time() - 86400
    for name in ("img.jpg", "bad.jpg"):
        os.utime(os.path.join(d, name), (day, day))
    return d


@pytest.fixture(scope="module")
def origin(root):
    o = harness.ControlledOrigin(root)
    yield o
    o.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, origin, root):
    st = harness.Stack(
        str(tmp_path_factory.mktemp("cache")),
        vhosts=[
            {"name": WEB, "default": True, "origin": origin.url},
            {"name": "files.test", "origin": "file://" + root},
            {"name": "off.test", "origin": origin.url, "cache": {"enable": False}},
            {"name": "ttl.test", "origin": origin.url, "cache": {"ttl": {"res2xx": "7s", "res4xx": "1m"}}},
            {"name": "ovr.test", "origin": origin.url,
             "cache": {"override_origin": True, "ttl": {"res2xx": {"value": 9, "ratio": 20, "max": "1h"}}}},
        ],
        workers=1,
    )
    yield st
    st.close()


def _single_stack(make_stack, origin, **cache_vhost):
    vh = {"name": WEB, "default": True, "origin": origin.url}
    if cache_vhost:
        vh["cache"] = cache_vhost
    return make_stack([vh], workers=0)


# --------------------------------------------------------- hits and misses ---

def test_miss_then_hit_keeps_headers(stack, origin):
    path = ctl("hdrs", cc="max-age=300", etag='"abc-1"', lm=86400, size=5000,
               hdr=["X-Custom: one", "X-Other: two, three", "Content-Language: fr"])
    data = pattern_bytes(5000)
    r1 = stack.get(path)
    assert r1.status_code == 200 and r1.content == data
    assert_miss_stored(r1, ttl=300)
    r2 = stack.get(path)
    assert r2.status_code == 200 and r2.content == data
    assert_hit(r2, ttl=300)
    for h in ("ETag", "Content-Type", "Last-Modified", "X-Custom", "X-Other", "Content-Language", "Cache-Control",
              "Content-Length"):
        assert r2.headers.get(h) == r1.headers.get(h) and r1.headers.get(h), (h, dict(r1.headers), dict(r2.headers))
    assert r2.headers["ETag"] == '"abc-1"'
    assert r2.headers["X-Other"] == "two, three"
    assert int(r2.headers["Age"]) <= 2
    assert r2.headers["X-Request-Id"] != r1.headers["X-Request-Id"]
    assert origin.count(path) == 1
    # Age grows with time spent in the cache; the remaining ttl shrinks.
    time.sleep(1.1)
    r3 = stack.get(path)
    assert r3.content == data
    cs = assert_hit(r3)
    assert int(r3.headers["Age"]) >= 1
    assert cs["ttl"] <= 299
    assert origin.count(path) == 1


def test_hit_age_includes_the_origins_age(stack, origin):
    """An object that was already 100 s old at the origin (Age: 100,
    max-age=300) has 200 s left and says Age >= 100 on hits."""
    path = ctl("aged", cc="max-age=300", age=100, size=100)
    r1 = stack.get(path)
    assert_miss_stored(r1, ttl=200)
    r2 = stack.get(path)
    assert_hit(r2, ttl=200)
    assert 100 <= int(r2.headers["Age"]) <= 102, r2.headers["Age"]
    r3 = raw_get(stack.port, path)
    assert len(re.findall(rb"(?im)^age:", r3.raw_head)) == 1, r3.raw_head  # the origin's Age is replaced


def test_hit_accept_ranges_single_line(stack, origin):
    """The origin's own Accept-Ranges: bytes is stored; a hit must not send
    a second one beside it."""
    path = ctl("acceptranges", cc="max-age=300", hdr=["Accept-Ranges: bytes"], size=100)
    for _ in range(2):
        r = raw_get(stack.port, path)
        lines = re.findall(rb"(?im)^accept-ranges:.*$", r.raw_head)
        assert len(lines) == 1, f"{r.headers.get('cache-status')}: {lines}"
    assert origin.count(path) == 1


def test_set_cookie_never_replayed(stack, origin):
    """A Set-Cookie belongs to the client whose request fetched it: that
    client gets it, and no other client ever receives the same line (a
    replay from a stored object, or from a fill someone else started)."""
    path = ctl("cookie", cc="max-age=300", cookie="session=secret-{serial}; Path=/", serial=1)
    r1 = stack.get(path)
    assert r1.headers.get("Set-Cookie") == "session=secret-%s; Path=/" % r1.content.decode().strip().split("=")[1], \
        f"the fetching client lost its Set-Cookie: {dict(r1.headers)}"
    got = [r1.headers.get("Set-Cookie")]
    for _ in range(3):
        got.append(stack.get(path).headers.get("Set-Cookie"))
    # and four at once, joining one fill (held at the origin)
    held = ctl("cookie-held", cc="max-age=300", cookie="session=held-{serial}; Path=/", serial=1, hold="cookie")
    base = settled_inflight(stack)
    out = [None] * 4
    ts = [threading.Thread(target=lambda i=i: out.__setitem__(i, stack.get(held, timeout=20))) for i in range(4)]
    for t in ts:
        t.start()
    try:
        wait_for(lambda: origin.count(held) >= 1, 10, "the held origin request")
        wait_inflight(stack, base + 4)
    finally:
        origin.release("cookie")
    for t in ts:
        t.join(20)
    assert all(r is not None and r.status_code == 200 for r in out)
    got_held = [r.headers.get("Set-Cookie") for r in out]
    assert got_held.count(None) < 4, "nobody got the Set-Cookie of the fill"
    for lines, p in ((got, path), (got_held, held)):
        values = [v for v in lines if v is not None]
        assert len(values) == len(set(values)), f"a Set-Cookie reached two clients: {lines}"
        assert len(values) <= origin.count(p)
    # harness /_cookies: two Set-Cookie lines (and a Connection-nominated header)
    rs = [stack.get("/_cookies") for _ in range(3)]
    with_cookie = [r for r in rs if "Set-Cookie" in r.headers]
    assert len(with_cookie) <= origin.count("/_cookies"), [dict(r.headers) for r in rs]
    assert all(r.content == b"cookies\n" and "X-Origin-Hop" not in r.headers for r in rs)


def test_http2_hit(stack, origin, tmp_path):
    path = ctl("h2", cc="max-age=300", size=300000, seed=2)
    data = pattern_bytes(300000, seed=2)
    stack.get(path)
    out = tmp_path / "h2.bin"
    r = harness.curl(["--http2-prior-knowledge", "-D", "-", "-o", str(out), stack.url(path)])
    assert r.returncode == 0, r.stderr
    head = r.stdout.decode("latin-1")
    assert head.startswith("HTTP/2 200"), head
    assert re.search(r"(?im)^cache-status: refract; hit; ttl=\d+\r?$", head), head
    assert out.read_bytes() == data
    assert origin.count(path) == 1


# ------------------------------------------------------------------ collapsing ---

async def _many(port, path, n, before_release, release):
    sem = asyncio.Semaphore(256)

    async def connect():
        async with sem:
            return await asyncio.open_connection("127.0.0.1", port)

    conns = await asyncio.gather(*[connect() for _ in range(n)])
    req = f"GET {path} HTTP/1.1\r\nHost: {WEB}\r\n\r\n".encode()
    for _, w in conns:
        w.write(req)
    await asyncio.gather(*[w.drain() for _, w in conns])

    async def read(r):
        head = await r.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k:
                hdrs[k.strip().lower()] = v.strip()
        body = await r.readexactly(int(hdrs["content-length"]))
        return int(lines[0].split()[1]), hdrs, body

    tasks = [asyncio.ensure_future(read(r)) for r, _ in conns]
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, before_release)
    finally:
        release()
    try:
        return await asyncio.wait_for(asyncio.gather(*tasks), 40)
    finally:
        for _, w in conns:
            w.close()


@pytest.mark.timeout_s(90)
def test_1000_concurrent_misses_make_one_origin_request(stack, origin):
    n = 1000
    path = ctl("thousand", cc="max-age=300", size=3000, seed=5, hold="thousand")
    data = pattern_bytes(3000, seed=5)
    base = settled_inflight(stack)

    def all_waiting():
        # The origin holds its answer until all 1,000 requests are inside
        # the gateway: then every one but the first must have joined.
        wait_for(lambda: origin.count(path) >= 1, 20, "the fill's origin request")
        wait_inflight(stack, base + n)

    t0 = time.monotonic()
    results = asyncio.run(_many(stack.port, path, n, all_waiting, lambda: origin.release("thousand")))
    elapsed = time.monotonic() - t0
    harness.MEASUREMENTS.append(f"cache: {n} concurrent misses answered in {elapsed:.2f} s with "
                                f"{origin.count(path)} origin request(s)")
    assert origin.count(path) == 1
    assert len(results) == n
    statuses = {s for s, _, _ in results}
    assert statuses == {200}, statuses
    bad = [i for i, (_, _, b) in enumerate(results) if b != data]
    assert not bad, f"{len(bad)} bodies differ from the origin's"
    kinds = {}
    for _, h, _ in results:
        cs = h.get("cache-status", "")
        kinds[re.sub(r"ttl=\d+", "ttl=N", cs)] = kinds.get(re.sub(r"ttl=\d+", "ttl=N", cs), 0) + 1
    assert kinds == {"refract; fwd=miss; fwd-status=200; stored; ttl=N": 1,
                     "refract; fwd=miss; collapsed; stored; ttl=N": n - 1}, kinds
    # and it was stored: the next one is a hit
    assert_hit(stack.get(path))
    assert origin.count(path) == 1


def test_waiter_gets_first_bytes_before_the_origin_finishes(stack, origin):
    """The origin sends half the body and stops until released: a request
    that joined the fill receives that half while the origin still holds
    the rest."""
    size, half = 400000, 200000
    path = ctl("firstbyte", cc="max-age=300", size=size, seed=6, split=half, gate="firstbyte")
    data = pattern_bytes(size, seed=6)
    a = Raw(stack.port, path)
    b = None
    try:
        wait_for(lambda: origin.count(path) == 1, 10, "the claimer's origin request")
        b = Raw(stack.port, path)
        t0 = time.monotonic()
        b.head().read_until(half, timeout=5)
        waited = time.monotonic() - t0
        assert bytes(b.body) == data[:len(b.body)] and len(b.body) == half, len(b.body)
        cs = cs_parse(b.headers.get("cache-status"))
        assert cs.get("collapsed") is True and cs.get("fwd") == "miss", b.headers.get("cache-status")
        assert int(b.headers["content-length"]) == size
        a.head().read_until(half, timeout=5)
        assert bytes(a.body) == data[:half]
        assert not b.ended and not a.ended
        origin.release("firstbyte")
        a.read_all(10)
        b.read_all(10)
        assert a.ended and b.ended
        assert bytes(a.body) == data and bytes(b.body) == data
        assert origin.count(path) == 1
        harness.MEASUREMENTS.append(f"cache: a waiter had the first {half} bytes {waited * 1000:.0f} ms after asking, "
                                    "while the origin still held the rest")
    finally:
        origin.release("firstbyte")
        a.close()
        if b is not None:
            b.close()


@pytest.mark.timeout_s(60)
def test_ttl0_burst_shares_origin_answers(stack, origin):
    """max-age=0 answers are shared by the requests waiting for them, then
    dropped: 16 clients hammering for 2 s against an origin taking 0.2 s
    make about 10 origin requests, not hundreds."""
    path = ctl("burst", cc="max-age=0", size=2000, seed=8, delay=0.2)
    data = pattern_bytes(2000, seed=8)
    T, L, clients = 2.0, 0.2, 16
    stop = time.monotonic() + T
    results = []
    lock = threading.Lock()
    errors = []

    def client():
        with harness.session() as s:
            while time.monotonic() < stop:
                try:
                    r = s.get(stack.url(path), headers={"Host": WEB}, timeout=10)
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))
                    return
                with lock:
                    results.append((r.status_code, r.headers.get("Cache-Status"), r.content == data))

    ts = [threading.Thread(target=client) for _ in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not errors, errors[:3]
    k = origin.count(path)
    n = len(results)
    harness.MEASUREMENTS.append(f"cache: TTL-0 burst, {clients} clients for {T:.0f} s against a {L * 1000:.0f} ms "
                                f"origin: {n} requests, {k} origin requests")
    assert all(s == 200 and ok for s, _, ok in results), [x for x in results if x[0] != 200 or not x[2]][:3]
    assert k <= T / L * 1.5 + 2, f"{k} origin requests for {n} client requests"
    assert n >= 5 * k, f"{n} client requests made {k} origin requests"
    for _, cs, _ in results:
        p = cs_parse(cs)
        assert p.get("fwd") == "miss" and p.get("ttl") == 0 and "stored" not in p and "hit" not in p, cs
    assert any("collapsed" in cs for _, cs, _ in results)
    # nothing was stored
    before = origin.count(path)
    r = stack.get(path)
    assert cs_parse(cstatus(r)).get("fwd") == "miss"
    assert origin.count(path) == before + 1


def test_private_response_each_waiter_fetches_its_own(stack, origin):
    n, delay = 5, 0.6
    path = ctl("private", cc="private", serial=1, hold="private", delay=delay)
    base = settled_inflight(stack)
    out = [None] * n

    def one(i):
        out[i] = stack.get(path, timeout=20)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    try:
        wait_for(lambda: origin.count(path) >= 1, 10, "the first origin request")
        wait_inflight(stack, base + n)
        assert origin.count(path) == 1  # the others joined and wait
    finally:
        t_release = time.monotonic()
        origin.release("private")
    for t in ts:
        t.join(20)
    elapsed = time.monotonic() - t_release
    assert all(r is not None and r.status_code == 200 for r in out), out
    bodies = [r.content for r in out]
    assert len(set(bodies)) == n, f"responses were shared: {bodies}"
    assert origin.count(path) == n
    for r in out:
        assert cs_parse(cstatus(r)).get("detail") == "uncacheable", cstatus(r)
        assert "stored" not in cs_parse(cstatus(r))
        assert r.headers.get("Cache-Control") == "private"
    # The waiters went to the origin side by side: one origin delay for
    # the first answer, one more for all the others (serialised: n of them).
    assert elapsed < 2 * delay + 1.0, f"{n} private responses took {elapsed:.2f} s after release (serialised: " \
                                      f"{n * delay:.1f} s)"
    r = stack.get(path)
    assert r.content not in bodies and origin.count(path) == n + 1


def test_expired_object_is_refetched(stack, origin):
    path = ctl("expiry", cc="max-age=1", serial=1)
    r1 = stack.get(path)
    assert_miss_stored(r1, ttl=1)
    r2 = stack.get(path)
    if cs_parse(cstatus(r2)).get("hit"):  # within the second it is fresh
        assert r2.content == r1.content
    time.sleep(2.1)
    r3 = stack.get(path)
    assert_miss_stored(r3, ttl=1, fwd="stale")
    assert r3.content != r1.content
    r4 = stack.get(path)
    if cs_parse(cstatus(r4)).get("hit"):
        assert r4.content == r3.content
    assert origin.count(path) in (2, 3)


def test_expired_object_refresh_collapses(stack, origin):
    """Concurrent requests for an expired object make one origin request:
    the first refetches (fwd=stale), the others join it."""
    n = 6
    path = ctl("refresh", cc="max-age=1", serial=1, hold="refresh")
    origin.release("refresh")
    r1 = stack.get(path)
    assert_miss_stored(r1, ttl=1)
    origin.rearm("refresh")  # the refetch is held
    # ... for as long as the requests take to gather, which counts in the
    # answer's age (RFC 9111 4.2.3): give it a lifetime that outlasts that
    origin.override("refresh", cc="max-age=60", serial=1, hold="refresh")
    time.sleep(2.1)
    base = settled_inflight(stack)
    out = [None] * n
    ts = [threading.Thread(target=lambda i=i: out.__setitem__(i, stack.get(path, timeout=20))) for i in range(n)]
    for t in ts:
        t.start()
    try:
        wait_for(lambda: origin.count(path) >= 2, 10, "the refetch")
        wait_inflight(stack, base + n)
    finally:
        origin.release("refresh")
        origin.override("refresh")
    for t in ts:
        t.join(20)
    assert origin.count(path) == 2
    assert all(r is not None and r.status_code == 200 for r in out)
    assert len({r.content for r in out}) == 1 and out[0].content != r1.content
    kinds = sorted(re.sub(r"; ttl=\d+", "", cstatus(r)) for r in out)
    assert kinds == sorted(["refract; fwd=stale; fwd-status=200; stored"] +
                           ["refract; fwd=miss; collapsed; stored"] * (n - 1)), kinds


def test_expired_object_revalidated_with_304(stack, origin):
    """An expired object with a validator is refreshed conditionally: the
    origin's 304 keeps the stored body and makes it fresh again."""
    path = ctl("reval", cc="max-age=1", etag='"e1"', cond=1, serial=1)
    r1 = stack.get(path)
    assert_miss_stored(r1, ttl=1)
    time.sleep(2.1)
    r2 = stack.get(path)
    assert r2.status_code == 200 and r2.content == r1.content
    cs = cs_parse(cstatus(r2))
    assert cs.get("fwd") == "stale" and cs.get("fwd-status") == 304 and cs.get("stored") is True, cstatus(r2)
    assert r2.headers.get("ETag") == '"e1"'
    seen = [q for q in origin.requests if q["path"] == path]
    assert len(seen) == 2
    inm = {k.lower(): v for k, v in seen[1]["headers"].items()}.get("if-none-match")
    assert inm == '"e1"', seen[1]["headers"]
    r3 = stack.get(path)
    assert_hit(r3)
    assert r3.content == r1.content
    # a client's own validator is answered from the refreshed object
    r4 = stack.get(path, headers={"If-None-Match": '"e1"'})
    assert r4.status_code == 304
    assert origin.count(path) == 2


@pytest.mark.parametrize("failure", ["status500", "no-answer"])
def test_stale_object_served_when_the_origin_fails(stack, origin, failure):
    """STON's circuit breaker: an expired object whose refresh gets a 5xx or
    no answer at all is served stale instead of the error."""
    name = "breaker-" + failure
    # max-age=2, not 1: the extended TTL is counted in whole seconds, so a
    # 1 s one may run out between r2 and r3 (seen once in CI)
    path = ctl(name, cc="max-age=2", serial=1)
    r1 = stack.get(path)
    assert_miss_stored(r1, ttl=2)
    time.sleep(3.1)
    origin.override(name, **({"status": 500} if failure == "status500" else {"close": 1}))
    try:
        r2 = stack.get(path)
        assert r2.status_code == 200 and r2.content == r1.content, (r2.status_code, r2.content, cstatus(r2))
        cs = cs_parse(cstatus(r2))
        assert cs.get("fwd") == "stale" and cs.get("detail") == "origin-error", cstatus(r2)
        n = origin.count(path)
        assert n >= 2  # (a GET that got no answer may be retried once)
        r3 = stack.get(path)
        assert r3.status_code == 200 and r3.content == r1.content
        assert_hit(r3)  # served stale for a while: the origin is not asked again at once
        assert origin.count(path) == n
    finally:
        origin.override(name)


def test_must_revalidate_object_not_served_stale_on_failure(stack, origin):
    name = "breaker-mustreval"
    path = ctl(name, cc="max-age=1, must-revalidate", serial=1)
    r1 = stack.get(path)
    assert_miss_stored(r1, ttl=1)
    time.sleep(2.1)
    origin.override(name, close=1)
    try:
        r2 = stack.get(path)
        assert r2.status_code == 502 and r2.content != r1.content, (r2.status_code, r2.content, cstatus(r2))
    finally:
        origin.override(name)


def test_stale_while_revalidate_answers_at_once_and_refreshes_behind(stack, origin):
    """RFC 5861: within stale-while-revalidate, an expired object answers
    at once (a stale hit: negative ttl) while one refresh runs in the
    background; requests during the refresh get the stale copy too, and
    the refreshed object is served once it is in."""
    name = "swr"
    path = ctl(name, cc="max-age=1, stale-while-revalidate=30", serial=1)
    r1 = stack.get(path)
    assert_miss_stored(r1, ttl=1)
    time.sleep(2.1)
    # The refresh waits at the origin, and what it brings stays fresh long
    # after: with the first max-age=1 the refreshed copy could expire again
    # (its age counts the time held) before r4 and start a third fetch.
    origin.override(name, hold=name, cc="max-age=60, stale-while-revalidate=30")
    try:
        t0 = time.monotonic()
        r2 = stack.get(path, timeout=5)
        assert time.monotonic() - t0 < 1.5, "the stale answer waited for the refresh"
        assert r2.status_code == 200 and r2.content == r1.content
        cs = cs_parse(cstatus(r2))
        assert cs.get("hit") is True and cs.get("detail") == "stale-while-revalidate", cstatus(r2)
        assert cs.get("ttl") < 0, cstatus(r2)
        assert int(r2.headers["Age"]) >= 2
        wait_for(lambda: origin.count(path) == 2, 5, "the background refresh reached the origin")
        r3 = stack.get(path, timeout=5)  # the refresh is still held: the stale copy again
        assert r3.content == r1.content and "stale-while-revalidate" in cstatus(r3), cstatus(r3)
        assert origin.count(path) == 2
    finally:
        origin.release(name)
        origin.override(name)
    wait_for(lambda: stack.get(path).content != r1.content, 5, "the refreshed object served")
    r4 = stack.get(path)
    assert_hit(r4)
    assert origin.count(path) == 2


def test_stale_while_revalidate_window_and_must_revalidate(stack, origin):
    """Past the stale-while-revalidate window, or with must-revalidate, an
    expired object is refreshed before it answers, as without it."""
    for name, cc, wait in (("swr-past", "max-age=1, stale-while-revalidate=1", 3.1),
                           ("swr-mustreval", "max-age=1, stale-while-revalidate=30, must-revalidate", 2.1)):
        path = ctl(name, cc=cc, serial=1)
        r1 = stack.get(path)
        assert_miss_stored(r1, ttl=1)
        time.sleep(wait)
        r2 = stack.get(path)
        assert r2.content != r1.content, name
        assert cs_parse(cstatus(r2)).get("fwd") == "stale", (name, cstatus(r2))
        assert origin.count(path) == 2


def test_stale_if_error_without_the_circuit_breaker(make_stack, origin):
    """RFC 5861 stale-if-error serves the stale copy on a 5xx or no answer
    within its window even where the vhost's circuit breaker is off; an
    answer without it passes the error through."""
    st = _single_stack(make_stack, origin, ttl_extension_4xx=False, ttl_extension_5xx=False, ttl_extension=0)
    sie, plain = ctl("sie", cc="max-age=1, stale-if-error=60", serial=1), ctl("sie-no", cc="max-age=1", serial=1)
    r1, p1 = st.get(sie), st.get(plain)
    assert_miss_stored(r1, ttl=1)
    assert_miss_stored(p1, ttl=1)
    time.sleep(2.1)
    origin.override("sie", status=503)
    origin.override("sie-no", status=503)
    try:
        r2 = st.get(sie)
        assert r2.status_code == 200 and r2.content == r1.content, (r2.status_code, cstatus(r2))
        cs = cs_parse(cstatus(r2))
        assert cs.get("fwd") == "stale" and cs.get("fwd-status") == 503 and cs.get("detail") == "origin-error"
        assert "(stale-if-error)" in st.gw.log()
        p2 = st.get(plain)
        assert p2.status_code == 503, (p2.status_code, cstatus(p2))
        r3 = st.get(sie)  # kept for a while (at most 10 s) before the origin is asked again
        assert_hit(r3)
        assert r3.content == r1.content
    finally:
        origin.override("sie")
        origin.override("sie-no")


def test_client_leaving_does_not_stop_a_stored_fill(stack, origin):
    size = 400000
    path = ctl("leaver", cc="max-age=600", size=size, seed=9, split=100000, gate="leaver")
    c = Raw(stack.port, path)
    try:
        c.head().read_until(100000, timeout=5)
    finally:
        c.close()  # the only client goes away mid-fill
    time.sleep(0.2)
    origin.release("leaver")
    wait_for(lambda: object_file(stack, path), 10, "the object file")
    r = stack.get(path)
    assert_hit(r)
    assert r.content == pattern_bytes(size, seed=9)
    assert origin.count(path) == 1


def test_range_while_filling(stack, origin):
    """A waiter asking for a range that has already arrived gets its 206 at
    once; one asking for bytes not yet there gets them when they come."""
    size, half = 400000, 200000
    path = ctl("rangefill", cc="max-age=600", size=size, seed=10, split=half, gate="rangefill")
    data = pattern_bytes(size, seed=10)
    a = Raw(stack.port, path)
    b = c = None
    try:
        wait_for(lambda: origin.count(path) == 1, 10, "the claimer's origin request")
        a.head().read_until(half, timeout=5)
        b = Raw(stack.port, path, headers={"Range": "bytes=1000-1999"}).head()
        assert b.status == 206, b.raw_head
        b.read_all(5)
        assert b.ended and bytes(b.body) == data[1000:2000]
        assert b.headers["content-range"] == f"bytes 1000-1999/{size}"
        c = Raw(stack.port, path, headers={"Range": "bytes=300000-300099"}).head()
        assert c.status == 206 and c.headers["content-range"] == f"bytes 300000-300099/{size}", c.raw_head
        assert not c.ended
        origin.release("rangefill")
        c.read_all(10)
        assert c.ended and bytes(c.body) == data[300000:300100]
        a.read_all(10)
        assert bytes(a.body) == data
    finally:
        origin.release("rangefill")
        for x in (a, b, c):
            if x is not None:
                x.close()
    assert origin.count(path) == 1


def test_empty_body_object(stack, origin):
    path = ctl("empty", cc="max-age=600", size=0)
    r1 = raw_get(stack.port, path)
    assert r1.status == 200 and r1.ended and r1.body == b"" and r1.trailing == b""
    assert_miss_stored(r1)
    r2 = raw_get(stack.port, path)
    assert r2.status == 200 and r2.headers.get("content-length") == "0" and r2.body == b"" and r2.trailing == b""
    assert_hit(r2)
    r3 = raw_get(stack.port, path, headers={"Range": "bytes=0-"})
    assert r3.status in (200, 416), r3.raw_head
    assert origin.count(path) == 1


def test_chunked_origin_is_stored_and_served_with_a_length(stack, origin):
    size = 150000
    path = ctl("chunkstore", cc="max-age=600", size=size, seed=14, chunked=1, split=50000, pause=0.05)
    data = pattern_bytes(size, seed=14)
    r1 = raw_get(stack.port, path)
    assert r1.ended and bytes(r1.body) == data
    assert_miss_stored(r1)
    r2 = raw_get(stack.port, path)
    assert_hit(r2)
    assert r2.headers.get("content-length") == str(size) and bytes(r2.body) == data
    r3 = raw_get(stack.port, path, headers={"Range": "bytes=-10"})
    assert r3.status == 206 and bytes(r3.body) == data[-10:]
    assert origin.count(path) == 1


# --------------------------------------------------- Range, conditionals, HEAD ---

RSIZE = 10000


@pytest.fixture(scope="module")
def ranged(stack, origin):
    """A stored object with a strong ETag and a Last-Modified an hour ago."""
    path = ctl("ranged", cc="max-age=600", etag='"v1"', lm=3600, size=RSIZE, seed=11)
    r = stack.get(path)
    assert_miss_stored(r)
    return path, pattern_bytes(RSIZE, seed=11), r.headers["Last-Modified"]


@pytest.mark.parametrize("rng,status,lo,hi", [
    ("bytes=0-99", 206, 0, 99),
    ("bytes=9990-", 206, 9990, 9999),
    ("bytes=9990-20000", 206, 9990, 9999),
    ("bytes=-100", 206, 9900, 9999),
    ("bytes=-20000", 206, 0, 9999),
    ("bytes=5000-5000", 206, 5000, 5000),
    ("bytes=10000-", 416, None, None),
    ("bytes=0-1,5-6", 200, 0, 9999),
    ("bytes=9-5", 200, 0, 9999),
    ("items=0-5", 200, 0, 9999),
])
def test_range_from_cache(stack, origin, ranged, rng, status, lo, hi):
    path, data, _ = ranged
    r = stack.get(path, headers={"Range": rng})
    assert r.status_code == status, (rng, r.status_code, dict(r.headers))
    assert_hit(r)
    if status == 206:
        assert r.headers["Content-Range"] == f"bytes {lo}-{hi}/{RSIZE}"
        assert r.content == data[lo:hi + 1]
        assert int(r.headers["Content-Length"]) == hi - lo + 1
    elif status == 416:
        assert r.headers["Content-Range"] == f"bytes */{RSIZE}"
        assert r.content == b""
    else:
        assert "Content-Range" not in r.headers
        assert r.content == data
    assert origin.count(path) == 1


@pytest.mark.parametrize("if_range,status", [('"v1"', 206), ('"v0"', 200), ('W/"v1"', 200), ("lm", 206),
                                             ("Thu, 01 Jan 1998 00:00:00 GMT", 200)])
def test_if_range_from_cache(stack, origin, ranged, if_range, status):
    path, data, lm = ranged
    r = stack.get(path, headers={"Range": "bytes=100-199", "If-Range": lm if if_range == "lm" else if_range})
    assert r.status_code == status, (if_range, dict(r.headers))
    assert_hit(r)
    assert r.content == (data[100:200] if status == 206 else data)
    assert origin.count(path) == 1


@pytest.mark.parametrize("hdrs,status", [
    ({"If-None-Match": '"v1"'}, 304),
    ({"If-None-Match": 'W/"v1"'}, 304),
    ({"If-None-Match": '"x", "v1"'}, 304),
    ({"If-None-Match": "*"}, 304),
    ({"If-None-Match": '"v2"'}, 200),
    ({"If-Modified-Since": "lm"}, 304),
    ({"If-Modified-Since": "Thu, 01 Jan 1998 00:00:00 GMT"}, 200),
    ({"If-None-Match": '"v2"', "If-Modified-Since": "lm"}, 200),  # If-None-Match wins
])
def test_conditional_from_cache(stack, origin, ranged, hdrs, status):
    path, data, lm = ranged
    h = {k: (lm if v == "lm" else v) for k, v in hdrs.items()}
    r = raw_get(stack.port, path, headers=h)
    assert r.status == status, (h, r.raw_head)
    assert_hit(r)
    if status == 304:
        assert r.body == b"" and r.trailing == b"", r.raw_head
        assert r.headers.get("etag") == '"v1"'
    else:
        assert bytes(r.body) == data
    assert origin.count(path) == 1


def test_range_on_a_miss_stores_the_whole_object(stack, origin):
    path = ctl("rangemiss", cc="max-age=600", size=RSIZE, seed=12)
    data = pattern_bytes(RSIZE, seed=12)
    r1 = stack.get(path, headers={"Range": "bytes=100-199", "If-None-Match": '"nothing"'})
    assert r1.status_code == 206 and r1.content == data[100:200], (r1.status_code, dict(r1.headers))
    assert r1.headers["Content-Range"] == f"bytes 100-199/{RSIZE}"
    assert_miss_stored(r1, fwd_status=200)
    seen = [q for q in origin.requests if q["path"] == path]
    assert len(seen) == 1
    lower = {k.lower() for k in seen[0]["headers"]}
    assert "range" not in lower and "if-none-match" not in lower, seen[0]["headers"]
    r2 = stack.get(path)
    assert r2.status_code == 200 and r2.content == data
    assert origin.count(path) == 1


def test_head_miss_then_get_hit(stack, origin):
    path = ctl("headfirst", cc="max-age=600", size=30000, seed=13)
    data = pattern_bytes(30000, seed=13)
    h = raw_get(stack.port, path, method="HEAD")
    assert h.status == 200 and int(h.headers["content-length"]) == 30000
    assert h.body == b"" and h.trailing == b"", "HEAD answered with body bytes"
    cs = cs_parse(h.headers["cache-status"])
    assert cs.get("fwd") == "miss" and cs.get("stored") is True, cs
    r = stack.get(path)
    assert r.status_code == 200 and r.content == data
    c = cs_parse(cstatus(r))
    assert c.get("hit") or c.get("collapsed"), cstatus(r)
    assert origin.count(path) == 1 and origin.count(path, "GET") == 1  # the fill asks for the whole object
    h2 = raw_get(stack.port, path, method="HEAD")
    assert h2.status == 200 and int(h2.headers["content-length"]) == 30000 and h2.body == b"" and h2.trailing == b""
    assert cs_parse(h2.headers["cache-status"]).get("hit") is True
    assert origin.count(path) == 1


# ------------------------------------------------------ methods and directives ---

@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_unsafe_method_invalidates(stack, origin, method):
    path = ctl(f"inval-{method}", cc="max-age=600", serial=1)
    r1 = stack.get(path)
    assert_miss_stored(r1)
    assert_hit(stack.get(path))
    p = stack.request(method, path, data=b"payload")
    assert p.status_code == 200
    assert cstatus(p) == "refract; fwd=method"
    assert origin.count(path, method) == 1
    r3 = stack.get(path)
    assert_miss_stored(r3)  # a miss, not a hit of the old object
    assert r3.content != r1.content
    assert_hit(stack.get(path))
    assert origin.count(path, "GET") == 2


def test_options_does_not_invalidate(stack, origin):
    path = ctl("options", cc="max-age=600", serial=1)
    r1 = stack.get(path)
    o = stack.request("OPTIONS", path)
    assert cstatus(o) == "refract; fwd=method"
    r2 = stack.get(path)
    assert_hit(r2)
    assert r2.content == r1.content


def test_request_no_store(stack, origin):
    """no-store: nothing of this exchange is stored (RFC 9111 5.2.1.5); a
    stored object may still answer it."""
    path = ctl("req-nostore", cc="max-age=600", serial=1)
    r1 = stack.get(path, headers={"Cache-Control": "no-store"})
    assert r1.status_code == 200 and cstatus(r1) == "refract; fwd=request"
    r2 = stack.get(path, headers={"Cache-Control": "no-store"})
    assert cstatus(r2) == "refract; fwd=request"
    assert r2.content != r1.content
    r3 = stack.get(path)
    assert_miss_stored(r3)  # nothing was stored by the no-store requests
    assert r3.content not in (r1.content, r2.content)
    assert origin.count(path) == 3
    r4 = stack.get(path, headers={"Cache-Control": "no-store"})
    assert r4.content == r3.content and origin.count(path) == 3, cstatus(r4)
    assert_hit(stack.get(path))  # and it did not remove the stored one
    assert origin.count(path) == 3


@pytest.mark.parametrize("name,hdrs", [("cc", {"Cache-Control": "no-cache"}), ("pragma", {"Pragma": "no-cache"}),
                                       ("cc-list", {"Cache-Control": "max-age=0, no-cache"})])
def test_request_no_cache_does_not_reach_the_origin(stack, origin, name, hdrs):
    """A client's no-cache / max-age=0 does not send a fresh object's
    request to the origin (gw_lookup: as Varnish, nginx and STON by
    default, or any client could put every request on the origin); on a
    miss it fills as usual."""
    path = ctl("req-nocache-" + name, cc="max-age=600", serial=1)
    r1 = stack.get(path, headers=hdrs)
    assert_miss_stored(r1)
    for _ in range(3):
        r = stack.get(path, headers=hdrs)
        assert_hit(r)
        assert r.content == r1.content
    assert origin.count(path) == 1


def test_request_only_if_cached(stack, origin):
    path = ctl("req-oic", cc="max-age=600", serial=1)
    r1 = stack.get(path, headers={"Cache-Control": "only-if-cached"})
    assert r1.status_code == 504
    assert origin.count(path) == 0
    r2 = stack.get(path)
    assert_miss_stored(r2)  # the 504 left nothing behind (no failed claim)
    r3 = stack.get(path, headers={"Cache-Control": "only-if-cached"})
    assert r3.status_code == 200 and r3.content == r2.content
    assert_hit(r3)
    assert origin.count(path) == 1


# ---------------------------------------------------------- TTL rules, config ---

# Seconds since the origin's files were last modified, set just before a
# request (the heuristic TTL is 10 % of that age).
FILE_AGE = {"/old.bin": 86400, "/recent.bin": 100, "/new.bin": 0}


def _age_file(root, path):
    if path in FILE_AGE:
        t = time.time() - FILE_AGE[path]
        os.utime(os.path.join(root, path.lstrip("/")), (t, t))


@pytest.mark.parametrize("path,ttl", [
    ("/old.bin", 1800),          # Last-Modified a day ago: the 10 % heuristic allows 8640 s, res2xx caps at 1800
    ("/recent.bin", 10),         # 100 s old: 10 % of that
    (ctl("nolm"), 1800),         # no Last-Modified, no Cache-Control: res2xx
    (ctl("smax", cc="s-maxage=50, max-age=10"), 50),
    (ctl("s404", status=404), 30),
    (ctl("s500", status=500), 30),
    (ctl("s302", status=302, hdr=["Location: /elsewhere"]), 300),
])
def test_ttl_rules(stack, origin, root, path, ttl):
    _age_file(root, path)
    r = stack.get(path)
    cs = cs_parse(cstatus(r))
    assert cs.get("stored") is True and cs.get("fwd") == "miss", cstatus(r)
    assert ttl - 2 <= cs["ttl"] <= ttl, cstatus(r)
    r2 = stack.get(path)
    assert_hit(r2)
    assert r2.status_code == r.status_code and r2.content == r.content
    assert origin.count(path) == 1


def test_ttl_from_expires(stack, origin):
    exp = email.utils.formatdate(time.time() + 120, usegmt=True)
    path = ctl("expires", hdr=[f"Expires: {exp}"])
    r = stack.get(path)
    assert_miss_stored(r, ttl=120)


@pytest.mark.parametrize("path,detail", [
    ("/new.bin", None),                        # modified just now: TTL 0, shared, not stored
    (ctl("o-nocache", cc="no-cache"), None),   # stored only to revalidate: never answered from
    (ctl("o-maxage0", cc="max-age=0"), None),
    (ctl("o-nostore", cc="no-store"), "uncacheable"),
    (ctl("o-private", cc="private, max-age=600"), "uncacheable"),
    (ctl("s403", status=403, cc="max-age=600"), "uncacheable"),
])
def test_not_stored(stack, origin, root, path, detail):
    for i in range(2):
        _age_file(root, path)
        r = stack.get(path)
        cs = cs_parse(cstatus(r))
        assert cs.get("fwd") == "miss" and "stored" not in cs and cs.get("ttl") == 0, cstatus(r)
        assert cs.get("detail") == detail, cstatus(r)
        assert origin.count(path) == i + 1


def test_vary_keeps_one_variant_per_request_value(stack, origin):
    path = ctl("vary", cc="max-age=600", serial=1, hdr=["Vary: X-Variant"])
    a1 = stack.get(path, headers={"X-Variant": "a"})
    assert_miss_stored(a1)
    b1 = stack.get(path, headers={"X-Variant": "b"})
    assert_miss_stored(b1)
    assert b1.content != a1.content
    n1 = stack.get(path)  # no value at all is a variant too
    assert_miss_stored(n1)
    assert n1.content not in (a1.content, b1.content)
    for v, want in (("a", a1), ("b", b1), (None, n1)):
        r = stack.get(path, headers={"X-Variant": v} if v else {})
        assert_hit(r)
        assert r.content == want.content and r.headers.get("Vary") == "X-Variant"
    assert origin.count(path) == 3
    star = ctl("vary-star", cc="max-age=600", serial=1, hdr=["Vary: *"])
    for i in range(2):
        r = stack.get(star)
        assert "stored" not in cs_parse(cstatus(r)) and "hit" not in cs_parse(cstatus(r)), cstatus(r)
    assert origin.count(star) == 2


def test_write_invalidates_every_vary_variant(stack, origin):
    """RFC 9111 4.4: a write to a URL invalidates all its stored answers,
    the Vary variants too — not only the one under the URL's own key."""
    path = ctl("vary-write", cc="max-age=600", serial=1, hdr=["Vary: X-Variant"])
    a1 = stack.get(path, headers={"X-Variant": "a"})
    b1 = stack.get(path, headers={"X-Variant": "b"})
    assert_hit(stack.get(path, headers={"X-Variant": "b"}))
    p = stack.request("PUT", path, data=b"new")
    assert p.status_code == 200
    a2 = stack.get(path, headers={"X-Variant": "a"})
    b2 = stack.get(path, headers={"X-Variant": "b"})
    assert "hit" not in cs_parse(cstatus(b2)), cstatus(b2)
    assert a2.content not in (a1.content, b1.content) and b2.content not in (a1.content, b1.content, a2.content)
    assert_hit(stack.get(path, headers={"X-Variant": "b"}))  # stored again
    assert origin.count(path, "GET") == 4


def test_authorization_request_not_stored(stack, origin):
    path = ctl("auth", cc="max-age=600", serial=1)
    r1 = stack.get(path, headers={"Authorization": "Bearer abc"})
    assert cs_parse(cstatus(r1)).get("detail") == "uncacheable", cstatus(r1)
    r2 = stack.get(path)
    assert_miss_stored(r2)
    assert r2.content != r1.content
    # public lets a shared cache keep it (RFC 9111 3.5)
    path2 = ctl("auth-public", cc="public, max-age=600", serial=1)
    r3 = stack.get(path2, headers={"Authorization": "Bearer abc"})
    assert_miss_stored(r3)


def test_cache_disabled_vhost_bypasses(stack, origin):
    path = ctl("off", cc="max-age=600", serial=1)
    for i in range(2):
        r = stack.get(path, host="off.test")
        assert cstatus(r) == "refract; fwd=bypass"
    assert origin.count(path) == 2


def test_file_origin_bypasses(stack, origin):
    for _ in range(2):
        r = stack.get("/old.bin", host="files.test")
        assert r.status_code == 200 and cstatus(r) == "refract; fwd=bypass"


@pytest.mark.parametrize("host", [WEB, "files.test"])
def test_function_results_cached_by_canonical_chain(stack, origin, host):
    """A dims result is kept under its canonical chain (from any origin):
    the same chain written another way is a hit; the source is fetched
    once."""
    chain = "resize/32x24/format/png"
    before = origin.count("/img.jpg")
    r1 = stack.get(f"/img.jpg/dims/{chain}", host=host, timeout=30)
    assert r1.status_code == 200 and r1.content[:4] == b"\x89PNG", (r1.status_code, r1.text[:200])
    cs = cs_parse(cstatus(r1))
    assert cs.get("fwd") == "miss" and cs.get("stored") is True, cstatus(r1)
    for p in (f"/img.jpg/dims/{chain}", f"/img.jpg/dims/{chain}/"):
        r = stack.get(p, host=host, timeout=30)
        assert_hit(r)
        assert r.content == r1.content and r.headers.get("Content-Type") == "image/png"
    assert origin.count("/img.jpg") - before == (1 if host == WEB else 0)


def test_function_fallback_not_cached(stack, origin):
    """A fallback (the source is not an image) is not kept: every request
    computes its own."""
    for i in range(2):
        r = stack.get("/bad.jpg/dims/resize/10x10", timeout=30)
        assert r.status_code == 200 and r.headers.get("X-Refract-Fallback"), dict(r.headers)
        cs = cs_parse(cstatus(r))
        assert cs.get("fwd") == "miss" and "stored" not in cs and "hit" not in cs, cstatus(r)
    assert origin.count("/bad.jpg") == 2


def test_vhost_ttl_config(stack, origin):
    p = ctl("vh-ttl")
    r = stack.get(p, host="ttl.test")
    assert_miss_stored(r, ttl=7)
    r = stack.get(ctl("vh-404", status=404), host="ttl.test")
    assert_miss_stored(r, ttl=60)
    # the same paths on another vhost are other objects
    r = stack.get(p)
    assert_miss_stored(r, ttl=1800)


def test_override_origin(stack, origin):
    r = stack.get(ctl("ovr", cc="max-age=600"), host="ovr.test")
    assert_miss_stored(r, ttl=9)
    r = stack.get(ctl("ovr-short", cc="max-age=1"), host="ovr.test")
    assert_miss_stored(r, ttl=9)
    # private is honoured even then
    r = stack.get(ctl("ovr-private", cc="private"), host="ovr.test")
    assert cs_parse(cstatus(r)).get("detail") == "uncacheable", cstatus(r)


def test_vhost_defaults_cache(make_stack, origin):
    st = make_stack([{"name": WEB, "default": True, "origin": origin.url},
                     {"name": "own.test", "origin": origin.url, "cache": {"ttl": {"res4xx": 5}}},
                     {"name": "off2.test", "origin": origin.url, "cache": {"enable": False}}],
                    vhost_defaults={"cache": {"ttl": {"res2xx": 42}}}, workers=0)
    assert_miss_stored(st.get(ctl("vd-a")), ttl=42)
    assert_miss_stored(st.get(ctl("vd-b"), host="own.test"), ttl=42)
    assert_miss_stored(st.get(ctl("vd-404", status=404), host="own.test"), ttl=5)
    assert cstatus(st.get(ctl("vd-c"), host="off2.test")) == "refract; fwd=bypass"


def test_config_rejects_bad_ttl(tmp_path, origin):
    st = harness.Stack(str(tmp_path / "bad"), [{"name": WEB, "default": True, "origin": origin.url,
                                                "cache": {"ttl": {"res2xx": "5 minutes"}}}], workers=0, start=False)
    try:
        r = subprocess.run([harness.GATEWAY_BIN, "-t", "-c", st.cfg_path], capture_output=True, text=True, timeout=10)
        assert r.returncode != 0
        assert "5 minutes" in r.stdout + r.stderr
    finally:
        st.close()


# ------------------------------------------------------------------- the store ---

def test_restart_keeps_objects(make_stack, origin):
    st = _single_stack(make_stack, origin)
    small = ctl("persist-small", cc="max-age=600", size=5000, seed=21, hdr=["X-Kept: yes"], etag='"p1"')
    big = ctl("persist-big", cc="max-age=600", size=6 * MB, seed=22)  # over memory_object_max: disk only
    bodies = {}
    for p in (small, big):
        r = st.get(p)
        assert_miss_stored(r)
        bodies[p] = r.content
    assert len(objects(st)) == 2, objects(st)
    t_stored = time.monotonic()
    _, problem = st.gw.stop()
    assert problem is None, problem
    st.start_gateway()
    for p in (small, big):
        r = st.get(p)
        assert r.status_code == 200
        assert_hit(r)
        assert sha256(r.content) == sha256(bodies[p])
        assert origin.count(p) == 1
    r = st.get(small)
    assert r.headers["X-Kept"] == "yes" and r.headers["ETag"] == '"p1"'
    assert int(r.headers["Age"]) <= time.monotonic() - t_stored + 2
    # ranges are answered from the disk copy too
    r = st.get(big, headers={"Range": "bytes=5000000-5000099"})
    assert r.status_code == 206 and r.content == pattern_bytes(6 * MB, seed=22)[5000000:5000100]


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


@pytest.mark.parametrize("damage", ["truncate", "body-bit", "fixed-header-bit", "stored-header-bit", "empty"])
def test_damaged_object_is_a_miss_after_restart(make_stack, origin, damage):
    st = _single_stack(make_stack, origin)
    size = 300000
    target = ctl(f"damaged-{damage}", cc="max-age=600", size=size, seed=31, hdr=["X-Marker: marker-value-123"])
    control = ctl(f"intact-{damage}", cc="max-age=600", size=1000, seed=32)
    data = pattern_bytes(size, seed=31)
    assert_miss_stored(st.get(target))
    assert_miss_stored(st.get(control))
    f = object_file(st, target)
    assert f is not None, objects(st)
    _, problem = st.gw.stop()
    assert problem is None, problem
    fsize = os.path.getsize(f)
    with open(f, "rb") as fh:
        content = fh.read()
    if damage == "truncate":
        os.truncate(f, fsize - 1000)
    elif damage == "empty":
        os.truncate(f, 0)
    elif damage == "body-bit":
        _flip(f, fsize - size // 2)  # the body is the end of the file
    elif damage == "fixed-header-bit":
        _flip(f, 40)  # inside rf_obj_disk_t (72 bytes, every one of them checked)
    else:
        i = content.find(b"marker-value-123")
        assert i > 0
        _flip(f, i + 7)  # a stored response header line: "marker-walue-123"
    st.start_gateway()
    r = st.get(target)
    assert r.status_code == 200
    assert r.headers.get("X-Marker") == "marker-value-123", dict(r.headers)
    assert sha256(r.content) == sha256(data), f"{damage}: a damaged object was served"
    cs = cs_parse(cstatus(r))
    assert cs.get("fwd") == "miss" and "hit" not in cs, f"{damage}: {cstatus(r)}"
    assert origin.count(target) == 2
    assert_hit(st.get(control))
    r = st.get(target)  # stored again, whole
    assert_hit(r)
    assert sha256(r.content) == sha256(data)


@pytest.mark.timeout_s(60)
def test_kill9_mid_fill_leaves_no_partial_object(make_stack, origin):
    st = _single_stack(make_stack, origin)
    done = ctl("before-kill", cc="max-age=600", size=300000, seed=42)
    assert_miss_stored(st.get(done))
    size = 4 * MB
    path = f"/_slow?size={size}&secs=2&seed=41"
    data = pattern_bytes(size, seed=41)
    c = Raw(st.port, path)
    try:
        c.head().read_until(512 * 1024, timeout=10)
        assert not c.ended
        assert tmp_files(st), "no fill file in cache/tmp during the fill"
        assert object_file(st, path) is None
        st.gw.kill9()
    finally:
        c.close()
    assert object_file(st, path) is None, "a partial object under its real name"
    leftovers = tmp_files(st)
    st.start_gateway()
    assert tmp_files(st) == [], f"cache/tmp not emptied at start (before: {leftovers})"
    assert object_file(st, path) is None
    assert origin.count(path) == 1
    r = st.get(path)
    cs = cs_parse(cstatus(r))
    assert cs.get("fwd") == "miss" and cs.get("stored") is True, cstatus(r)
    assert sha256(r.content) == sha256(data)
    assert origin.count(path) == 2
    f = object_file(st, path)
    assert f is not None and os.path.getsize(f) > size
    assert tmp_files(st) == []
    assert_hit(st.get(path))
    # the object completed before the kill is still there, whole
    r = st.get(done)
    assert_hit(r)
    assert r.content == pattern_bytes(300000, seed=42) and origin.count(done) == 1


def test_second_gateway_on_the_same_dir_refuses(stack, origin, tmp_path):
    path = ctl("lockdir", cc="max-age=600", size=1000, seed=51)
    assert_miss_stored(stack.get(path))
    before = objects(stack)
    cfg = json.loads(json.dumps(stack.config))
    port, admin, bus = harness.free_ports(3)
    cfg["gateway"]["listen"] = f"127.0.0.1:{port}"
    cfg["gateway"]["admin_listen"] = f"127.0.0.1:{admin}"
    cfg["bus"]["endpoint"] = f"tcp://127.0.0.1:{bus}"
    cfg_path = stack.write_config(cfg, str(tmp_path / "second.yaml"))
    p = subprocess.Popen([harness.GATEWAY_BIN, "-c", cfg_path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        pytest.fail(f"a second gateway on the same cache.dir kept running:\n{out.decode(errors='replace')}")
    text = out.decode(errors="replace")
    assert p.returncode == 1, text
    assert "in use" in text and stack.config["gateway"]["cache"]["dir"] in text, text
    # the first one is untouched
    assert_hit(stack.get(path))
    assert objects(stack) == before


def test_memory_only_vhost_writes_nothing(make_stack, origin):
    st = _single_stack(make_stack, origin, memory_only=True)
    small = ctl("memonly", cc="max-age=600", size=20000, seed=61)
    mid = ctl("memonly-mid", cc="max-age=600", size=2 * MB, seed=62)
    for p, size, seed in ((small, 20000, 61), (mid, 2 * MB, 62)):
        r1 = st.get(p)
        assert_miss_stored(r1)
        r2 = st.get(p)
        assert_hit(r2)
        assert r2.content == r1.content == pattern_bytes(size, seed=seed)
        assert origin.count(p) == 1
    assert objects(st) == []
    assert tmp_files(st) == []
    # volatile: gone after a restart
    _, problem = st.gw.stop()
    assert problem is None, problem
    st.start_gateway()
    assert_miss_stored(st.get(small))
    assert origin.count(small) == 2


def test_disk_limit_bounds_the_store(make_stack, origin):
    st = make_stack([{"name": WEB, "default": True, "origin": origin.url}], workers=0,
                    gateway={"cache": {"disk": "2MB", "memory": "1MB", "memory_object_max": "64KB"}})
    size = 400000
    paths = [ctl(f"evict-{i}", cc="max-age=600", size=size, seed=100 + i) for i in range(10)]
    for i, p in enumerate(paths):
        for _ in range(2):  # asked twice: worth keeping for any admission policy
            r = st.get(p)
            assert r.status_code == 200 and r.content == pattern_bytes(size, seed=100 + i)
        used = sum(os.path.getsize(f) for f in objects(st))
        assert used <= 2 * MB, f"after {i + 1} objects: {used} bytes on disk, over cache.disk (2MB)"
    assert objects(st), "nothing kept at all"
    # every object still answers whole, from the cache or the origin
    for i, p in enumerate(paths):
        r = st.get(p)
        assert r.content == pattern_bytes(size, seed=100 + i)
    assert sum(os.path.getsize(f) for f in objects(st)) <= 2 * MB


@pytest.mark.parametrize("chunked", [False, True])
def test_object_larger_than_the_disk_is_served_not_kept(make_stack, origin, chunked):
    st = make_stack([{"name": WEB, "default": True, "origin": origin.url}], workers=0,
                    gateway={"cache": {"disk": "1MB", "memory_object_max": "64KB"}})
    size = 3 * MB
    path = ctl("toobig", cc="max-age=600", size=size, seed=15, **({"chunked": 1} if chunked else {}))
    data = pattern_bytes(size, seed=15)
    for i in range(2):
        r = raw_get(st.port, path)
        assert r.ended and sha256(bytes(r.body)) == sha256(data), f"{r.n} of {size} bytes"
        cs = cs_parse(r.headers["cache-status"])
        assert "hit" not in cs and cs.get("fwd") == "miss", r.headers["cache-status"]
        assert origin.count(path) == i + 1
    assert objects(st) == [] and tmp_files(st) == []


# -------------------------------------------------------------- failed fills ---

def _assert_broken(c, size):
    assert c.status == 200
    assert not c.ended, "a cut transfer was presented as complete"
    assert len(c.body) < size
    if "content-length" in c.headers:
        assert int(c.headers["content-length"]) == size


@pytest.mark.parametrize("chunked", [False, True])
def test_cut_fill_is_a_broken_transfer_and_not_stored(stack, origin, chunked):
    size, sent = 300000, 100000
    if chunked:
        path = ctl("cut-chunked", size=size, seed=71, split=sent, pause=0.05, cut=1, chunked=1)
    else:
        path = f"/_cut?size={size}&sent={sent}"
    c = raw_get(stack.port, path)
    _assert_broken(c, size)
    assert bytes(c.body) == (pattern_bytes(size, seed=71) if chunked else pattern_bytes(sent))[:len(c.body)]
    c2 = raw_get(stack.port, path)
    _assert_broken(c2, size)
    cs = cs_parse(c2.headers.get("cache-status"))
    assert cs.get("fwd") == "miss" and "collapsed" not in cs and "hit" not in cs, c2.headers.get("cache-status")
    assert origin.count(path) == 2


def test_cut_fill_breaks_every_waiter(stack, origin):
    size, sent = 300000, 100000
    path = ctl("cut-waiters", size=size, seed=72, split=sent, gate="cutw", cut=1, cc="max-age=600")
    a = Raw(stack.port, path)
    b = None
    try:
        wait_for(lambda: origin.count(path) == 1, 10, "the claimer's origin request")
        b = Raw(stack.port, path)
        b.head().read_until(sent, timeout=5)
        a.head().read_until(sent, timeout=5)
        assert cs_parse(b.headers["cache-status"]).get("collapsed") is True
        origin.release("cutw")
        a.read_all(10)
        b.read_all(10)
        _assert_broken(a, size)
        _assert_broken(b, size)
    finally:
        origin.release("cutw")
        a.close()
        if b is not None:
            b.close()
    assert object_file(stack, path) is None
    c = raw_get(stack.port, path)
    cs = cs_parse(c.headers["cache-status"])
    assert cs.get("fwd") == "miss" and "hit" not in cs, c.headers["cache-status"]
    assert origin.count(path) == 2


# ----------------------------------------------------------- readers at any pace ---

@pytest.mark.timeout_s(60)
def test_20mb_slow_readers_do_not_hold_back_a_fast_one(stack, origin):
    size = 20 * MB
    path = f"/_slow?size={size}&secs=1&seed=81"
    want = sha256(pattern_bytes(size, seed=81))
    slow_rate = 4 * MB  # bytes/s: about 5 s for the whole object
    res = {}

    def run(name, pace, go=None):
        if go is not None:
            go.wait(10)
        t0 = time.monotonic()
        c = None
        try:
            # slow: a small receive buffer and paced reads
            c = Raw(stack.port, path, rcvbuf=None if pace is None else 64 * 1024, timeout=30, keep=False)
            c.head().read_all(40, pace=pace)
            res[name] = {"t0": t0, "t1": time.monotonic(), "sha": c.sha.hexdigest(), "n": c.n,
                         "cs": c.headers.get("cache-status"), "ended": c.ended}
        except Exception as e:  # noqa: BLE001 - reported below
            res[name] = {"error": repr(e)}
        finally:
            if c is not None:
                c.close()

    go = threading.Event()
    threads = [threading.Thread(target=run, args=("slow0", slow_rate))]
    threads[0].start()
    wait_for(lambda: origin.count(path) == 1, 10, "the fill's origin request")
    threads += [threading.Thread(target=run, args=(f"slow{i}", slow_rate)) for i in range(1, 4)]
    threads.append(threading.Thread(target=run, args=("fast", None, go)))
    for t in threads[1:]:
        t.start()
    time.sleep(0.1)
    go.set()
    for t in threads:
        t.join(40)
    errors = {k: v["error"] for k, v in res.items() if "error" in v}
    assert not errors, errors
    assert len(res) == 5
    for name, v in res.items():
        assert v["n"] == size and v["sha"] == want, f"{name}: {v['n']} bytes, sha {v['sha'][:12]}"
    fast = res["fast"]
    slows = [v for k, v in res.items() if k != "fast"]
    fast_time = fast["t1"] - fast["t0"]
    slow_first_end = min(v["t1"] for v in slows)
    slow_min_time = min(v["t1"] - v["t0"] for v in slows)
    slow_times = ", ".join("%.2f" % (v["t1"] - v["t0"]) for v in slows)
    harness.MEASUREMENTS.append(f"cache: 20 MB fill, fast reader {fast_time:.2f} s, slow readers {slow_times} s")
    assert fast["t1"] < slow_first_end - 1.0, "the fast reader finished with or after the slow ones"
    assert fast_time < slow_min_time / 2, f"fast reader {fast_time:.2f} s vs slow {slow_min_time:.2f} s"
    assert origin.count(path) == 1
    kinds = sorted(re.sub(r"; ttl=\d+", "", v["cs"]) for v in res.values())
    assert kinds.count("refract; fwd=miss; fwd-status=200; stored") == 1, kinds


@pytest.mark.parametrize("name,cc", [("nocache-etag", "no-cache"), ("maxage0-etag", "max-age=0")])
def test_no_cache_with_validator_is_kept_and_revalidated_each_use(stack, origin, name, cc):
    """RFC 9111 5.2.2.4: no-cache is stored, but every use asks the origin
    first; a 304 answers from the stored body. So is an answer the origin
    gives no freshness (max-age=0) when it has a validator."""
    path = ctl(name, cc=cc, etag='"n1"', cond=1, size=3000, seed=21)
    r1 = stack.get(path)
    assert r1.status_code == 200 and "stored" in cstatus(r1), cstatus(r1)
    for _ in range(2):
        n = origin.count(path)
        r = stack.get(path)
        assert r.status_code == 200 and r.content == pattern_bytes(3000, seed=21)
        assert "fwd=stale; fwd-status=304" in cstatus(r), cstatus(r)
        assert origin.count(path) == n + 1  # asked every time
        last = [q for q in origin.requests if q["path"] == path][-1]
        assert {k.lower(): v for k, v in last["headers"].items()}.get("if-none-match") == '"n1"'


def test_no_cache_without_validator_is_not_kept(stack, origin):
    path = ctl("nocache-plain", cc="no-cache", size=100)
    stack.get(path)
    r = stack.get(path)
    assert "fwd=miss" in cstatus(r) and "stored" not in cstatus(r), cstatus(r)
    assert origin.count(path) == 2


def test_nocache_max_age_tells_clients(make_stack, origin):
    """STON <NoCache MaxAge>: objects the NoCache rule times (here a
    must-revalidate answer without freshness) go to clients with
    Cache-Control: max-age=N instead of the origin's."""
    st = make_stack([{"name": WEB, "default": True, "origin": origin.url,
                      "cache": {"ttl": {"nocache": {"value": 5, "max_age": 60}}}}], workers=0)
    path = ctl("nocache-maxage", cc="must-revalidate", size=200)
    for _ in range(2):
        r = st.get(path)
        assert r.status_code == 200 and r.headers.get("Cache-Control") == "max-age=60", dict(r.headers)



def test_nocache_without_max_age_keeps_the_origin_cache_control(stack):
    path = ctl("nocache-maxage-off", cc="must-revalidate", size=200)
    r = stack.get(path)
    assert r.headers.get("Cache-Control") == "must-revalidate", dict(r.headers)
