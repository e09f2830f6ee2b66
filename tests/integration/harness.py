"""Helpers for refract's integration tests: free ports, a test origin web
server, sample media, YAML config writing, and a `Stack` that runs one
gateway and N image workers as subprocesses.

Only stdlib + requests. Used by conftest.py and the test modules.
"""
import email.utils
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# REFRACT_BIN runs the suite against another build, e.g. build/san/bin (ASan+UBSan).
BIN = os.environ.get("REFRACT_BIN") or os.path.join(REPO, "build", "bin")
GATEWAY_BIN = os.path.join(BIN, "refract-gateway")
# REFRACT_WORKER_BIN: the worker from yet another build (the TSan stage runs
# a TSan gateway with the normal worker).
WORKER_BIN = os.environ.get("REFRACT_WORKER_BIN") or os.path.join(BIN, "refract-image-worker")
VIDEO_WORKER_BIN = os.environ.get("REFRACT_VIDEO_WORKER_BIN") or os.path.join(BIN, "refract-video-worker")
SCHEDULER_BIN = os.path.join(BIN, "refract-storgate-scheduler")
# REFRACT_PREWARM_BIN: refract-prewarm from another build (its sanitizer build
# against the normal gateway and workers).
PREWARM_BIN = os.environ.get("REFRACT_PREWARM_BIN") or os.path.join(BIN, "refract-prewarm")

# Figures worth printing at the end of the run (conftest's terminal summary).
MEASUREMENTS = []

# Stacks currently running; conftest attaches their logs to failures.
LIVE_STACKS = []

# ---------------------------------------------------------------- ports ---

_handed_out = set()
_ports_lock = threading.Lock()


def free_ports(n):
    """n distinct loopback ports that nothing listens on right now and that
    this session has not handed out before."""
    out = []
    with _ports_lock:
        socks = []
        try:
            while len(out) < n:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("127.0.0.1", 0))
                socks.append(s)
                p = s.getsockname()[1]
                if p not in _handed_out:
                    _handed_out.add(p)
                    out.append(p)
        finally:
            for s in socks:
                s.close()
    return out


def free_port():
    return free_ports(1)[0]


# ----------------------------------------------------------------- http ---

def session():
    s = requests.Session()
    s.trust_env = False  # never a proxy for loopback tests
    return s


def http(method, url, host=None, headers=None, timeout=15, **kw):
    h = dict(headers or {})
    if host is not None:
        h["Host"] = host
    with session() as s:
        return s.request(method, url, headers=h, timeout=timeout, allow_redirects=False, **kw)


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def pattern_bytes(n, seed=1):
    """Deterministic pseudo-random bytes (the origin's generated bodies)."""
    return random.Random(seed).randbytes(n)


def one_line(text):
    """True when text is exactly one non-empty line ending in a newline."""
    return text.endswith("\n") and text.count("\n") == 1 and text.strip() != ""


def curl(args, timeout=60):
    """Runs curl (never through a proxy); returns CompletedProcess."""
    cmd = ["curl", "--noproxy", "*", "-sS"] + list(args)
    return subprocess.run(cmd, capture_output=True, timeout=timeout)


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssSampler:
    """Samples a process's VmRSS every `interval` seconds on a thread."""

    def __init__(self, pid, interval=0.1):
        self.pid = pid
        self.interval = interval
        self.samples = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            v = rss_kb(self.pid)
            if v is not None:
                self.samples.append(v)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(5)
        v = rss_kb(self.pid)
        if v is not None:
            self.samples.append(v)

    @property
    def max_kb(self):
        return max(self.samples) if self.samples else 0


# --------------------------------------------------------------- origin ---

class OriginHandler(BaseHTTPRequestHandler):
    """Serves files from server.root (Last-Modified, ETag, conditionals,
    single ranges, HEAD; bodies with sendfile) plus special paths:

      /_echo                any method: JSON of method, path, headers, body
      /_slow?size=N&secs=S  N pattern bytes spread over S seconds
      /_stall?size=N&sent=M head (Content-Length N), M bytes, then silence
      /_cut?size=N&sent=M   head (Content-Length N), M bytes, then close
      /_chunked?n=K&size=C  K chunks of C pattern bytes, no Content-Length
      /_chunked/<file>      a file sent chunked, no Content-Length
      /_delay?secs=S        the head only after S seconds
      /_status/<code>       that status with a short body
      /_eof?size=N          N pattern bytes, no length: the body ends at close
      /_headers?n=K         a 200 with K extra headers
      /_garbage             something that is not HTTP
      /_close               closes the connection without answering
      /_cookies             two Set-Cookie headers and a Connection-nominated one
    Paths ending in /_echo echo too (for origin URL prefixes).
    """

    protocol_version = "HTTP/1.1"
    server_version = "test-origin"

    def log_message(self, fmt, *args):  # quiet; requests are recorded instead
        pass

    def date_time_string(self, timestamp=None):
        """Date to the nearest second, not truncated: a response made in the
        last milliseconds of a second and received in the next one would
        otherwise be a second old on arrival (RFC 9111 apparent age, whole
        seconds), and a max-age=1 response would arrive stale, unstored
        (test_cache's stale-if-error test failed so once in CI)."""
        return email.utils.formatdate(round(time.time()) if timestamp is None else timestamp, usegmt=True)

    def _record(self, body=b""):
        with self.server.lock:
            self.server.requests.append(
                {"method": self.command, "path": self.path, "headers": dict(self.headers.items()), "body_len": len(body)}
            )

    def _read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body, ctype="text/plain", extra=None, more=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in list((extra or {}).items()) + list(more):
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _wait(self, secs):
        return self.server.stopping.wait(secs)

    def do_GET(self):
        try:
            self._dispatch(b"")
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    do_HEAD = do_GET

    def do_POST(self):
        try:
            self._dispatch(self._read_body())
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    do_PUT = do_POST

    def _dispatch(self, body):
        self._record(body)
        u = urllib.parse.urlsplit(self.path)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(u.query).items()}
        p = u.path
        if p == "/_echo" or p.endswith("/_echo"):
            out = json.dumps(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode("latin-1"),
                }
            ).encode()
            return self._send(200, out, "application/json")
        if p == "/_slow":
            size, secs = int(q.get("size", 1000000)), float(q.get("secs", 2))
            data = pattern_bytes(size, int(q.get("seed", 1)))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            steps = 20
            step = (size + steps - 1) // steps
            for i in range(0, size, step):
                self.wfile.write(data[i : i + step])
                if self._wait(secs / steps):
                    break
            return
        if p in ("/_stall", "/_cut"):
            size, sent = int(q.get("size", 1000000)), int(q.get("sent", 100000))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(pattern_bytes(sent))
            self.wfile.flush()
            if p == "/_stall":
                self._wait(float(q.get("secs", 20)))
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if p == "/_chunked" or p.startswith("/_chunked/"):
            if p == "/_chunked":
                n, size = int(q.get("n", 10)), int(q.get("size", 10000))
                data = pattern_bytes(n * size)
                chunks = [data[i * size : (i + 1) * size] for i in range(n)]
                ctype = "application/octet-stream"
            else:
                fpath = self._file(p[len("/_chunked") :])
                if fpath is None:
                    return self._send(404, b"no such file\n")
                with open(fpath, "rb") as f:
                    data = f.read()
                chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
                ctype = self._ctype(fpath)
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for c in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
                if q.get("pause"):
                    self._wait(float(q["pause"]))
            self.wfile.write(b"0\r\n\r\n")
            return
        if p == "/_delay":
            self._wait(float(q.get("secs", 3)))
            return self._send(200, b"late\n")
        if p == "/_eof":
            size = int(q.get("size", 100000))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(pattern_bytes(size))
            self.close_connection = True
            return
        if p == "/_headers":
            self.send_response(200)
            for i in range(int(q.get("n", 150))):
                self.send_header(f"X-Filler-{i}", "x" * 20)
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")
            return
        if p == "/_cookies":
            return self._send(200, b"cookies\n", extra={"Set-Cookie": "a=1; Path=/"},
                              more=[("Set-Cookie", "b=2; Path=/"), ("Connection", "X-Origin-Hop"),
                                    ("X-Origin-Hop", "drop me"), ("Cache-Control", "max-age=60")])
        if p == "/_garbage":
            self.wfile.write(b"THIS IS NOT HTTP AT ALL\r\n\r\n")
            self.close_connection = True
            return
        if p == "/_close":
            self.close_connection = True
            return
        if p.startswith("/_status/"):
            code = int(p.rsplit("/", 1)[1])
            return self._send(code, b"origin says %d\n" % code)
        return self._serve_file(p)

    def _file(self, urlpath):
        rel = urllib.parse.unquote(urlpath).lstrip("/")
        full = os.path.realpath(os.path.join(self.server.root, rel))
        if not full.startswith(os.path.realpath(self.server.root) + os.sep) or not os.path.isfile(full):
            return None
        return full

    @staticmethod
    def _ctype(path):
        ext = os.path.splitext(path)[1].lower()
        return {
            ".jpg": "image/jpeg",
            ".jpeg": "image/jpeg",
            ".png": "image/png",
            ".webp": "image/webp",
            ".txt": "text/plain",
            ".html": "text/html",
            ".css": "text/css",
            ".json": "application/json",
            ".js": "application/javascript",
            ".svg": "image/svg+xml",
        }.get(ext, "application/octet-stream")

    def _serve_file(self, urlpath):
        full = self._file(urlpath)
        if full is None:
            return self._send(404, b"not found at the origin\n")
        st = os.stat(full)
        etag = '"%x-%x"' % (int(st.st_mtime), st.st_size)
        lastmod = email.utils.formatdate(st.st_mtime, usegmt=True)
        common = {"Last-Modified": lastmod, "ETag": etag, "Accept-Ranges": "bytes"}
        common.update(getattr(self.server, "file_headers", {}).get(urlpath, {}))
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        not_modified = False
        if inm is not None:
            not_modified = etag in [t.strip() for t in inm.split(",")] or inm.strip() == "*"
        elif ims is not None:
            try:
                not_modified = int(st.st_mtime) <= email.utils.parsedate_to_datetime(ims).timestamp()
            except (TypeError, ValueError):
                pass
        if not_modified:
            self.send_response(304)
            for k, v in common.items():
                self.send_header(k, v)
            self.end_headers()
            return
        start, end, status = 0, st.st_size - 1, 200
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()) if rng else None
        if m and (m.group(1) or m.group(2)) and st.st_size > 0:
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), st.st_size - 1) if m.group(2) else st.st_size - 1
            else:
                start = max(0, st.st_size - int(m.group(2)))
            if start > end:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % st.st_size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        length = end - start + 1 if st.st_size else 0
        self.send_response(status)
        self.send_header("Content-Type", self._ctype(full))
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, st.st_size))
        for k, v in common.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD" or length == 0:
            return
        with open(full, "rb") as f:
            self.wfile.flush()
            self.connection.sendfile(f, start, length)


class _OriginServer(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 drops SYNs under concurrent connects
    daemon_threads = True


class _NoDelayOriginHandler(OriginHandler):
    disable_nagle_algorithm = True  # TCP_NODELAY on each accepted connection


class Origin:
    """A threaded test web server on a free loopback port.

    nodelay: TCP_NODELAY on its connections. http.server writes a response's
    head and body separately, so without it a small body waits for the
    gateway's delayed ACK of the head: ~40 ms on most origin requests. Tests
    that make thousands of origin requests (test_prewarm_scale.py) set it;
    the default keeps the timing the other tests were written against."""

    def __init__(self, root, nodelay=False):
        self.port = free_port()
        handler = _NoDelayOriginHandler if nodelay else OriginHandler
        self._serve(_OriginServer(("127.0.0.1", self.port), handler), root)

    def _serve(self, httpd, root):
        """Starts `httpd` (an OriginHandler server) serving `root` on its
        own thread; subclasses make the server (address, TLS) and call it."""
        self.root = root
        self.httpd = httpd
        httpd.daemon_threads = True
        httpd.root = root
        httpd.requests = []
        httpd.lock = threading.Lock()
        httpd.stopping = threading.Event()
        self.thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self):
        with self.httpd.lock:
            return list(self.httpd.requests)

    def close(self):
        self.httpd.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class ControlledOriginHandler(OriginHandler):
    """OriginHandler plus /_ctl/<anything>?<query>: a response whose
    headers, timing and failures the test chooses (for the edge cache
    tests). Every other path behaves exactly as in OriginHandler.

      size=N      body of N pattern bytes (seed=K), default 1000
      serial=1    body is "serial=<n>\\n", n counting this origin's /_ctl
                  requests from 1 (tells apart responses that must differ)
      status=C    status code (default 200)
      cc=V        Cache-Control: V
      age=N       Age: N
      lm=S        Last-Modified S seconds ago;  etag=V  ETag: V (quote it)
      cookie=V    Set-Cookie: V, with {serial} replaced by this request's serial
      hdr=Name:V  an extra header (repeatable)
      chunked=1   no Content-Length, chunked transfer coding
      hold=NAME   the head only once release(NAME) was called (20 s at most)
      delay=S     the head only after S seconds (after hold)
      split=M     send the first M body bytes, then pause=S seconds, or wait
                  for release(NAME) when gate=NAME (20 s at most), then the
                  rest
      cut=1       after the split (or at once without one), close the
                  connection instead of sending the rest of the body
      cond=1      answer 304 when If-None-Match names the etag
      close=1     close the connection without answering
    ControlledOrigin.override(name, **params) sets parameters for
    /_ctl/<name> over those of the query, until changed again.
    """

    def _dispatch(self, body):
        u = urllib.parse.urlsplit(self.path)
        if not u.path.startswith("/_ctl/"):
            hold = self.server.file_holds.get(u.path)
            if hold is not None:  # a file held until its gate opens (20 s at most)
                hold.wait(20)
            return super()._dispatch(body)
        self._record(body)
        qs = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        with self.server.lock:
            self.server.serial += 1
            serial = self.server.serial
            for k, v in self.server.overrides.get(u.path[len("/_ctl/"):], {}).items():
                qs[k] = list(v) if isinstance(v, (list, tuple)) else [str(v)]
        q = {k: v[0] for k, v in qs.items()}
        if q.get("close"):
            self.close_connection = True
            return
        if q.get("serial"):
            data = b"serial=%d\n" % serial
        else:
            data = pattern_bytes(int(q.get("size", 1000)), int(q.get("seed", 1)))
        if q.get("hold"):
            self.server.gate(q["hold"]).wait(20)
        if q.get("delay") and self._wait(float(q["delay"])):
            return
        inm = self.headers.get("If-None-Match")
        if q.get("cond") and "etag" in q and inm is not None and q["etag"] in [t.strip() for t in inm.split(",")]:
            self.send_response(304)
            self.send_header("ETag", q["etag"])
            if "cc" in q:
                self.send_header("Cache-Control", q["cc"])
            self.end_headers()
            return
        self.send_response(int(q.get("status", 200)))
        self.send_header("Content-Type", "application/octet-stream")
        chunked = bool(q.get("chunked"))
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(data)))
        if "cc" in q:
            self.send_header("Cache-Control", q["cc"])
        if "age" in q:
            self.send_header("Age", q["age"])
        if "lm" in q:
            self.send_header("Last-Modified", email.utils.formatdate(time.time() - float(q["lm"]), usegmt=True))
        if "etag" in q:
            self.send_header("ETag", q["etag"])
        if "cookie" in q:
            self.send_header("Set-Cookie", q["cookie"].replace("{serial}", str(serial)))
        for h in qs.get("hdr", []):
            k, _, v = h.partition(":")
            self.send_header(k.strip(), v.strip())
        self.end_headers()
        if self.command == "HEAD":
            return

        def out(b):
            if not b:
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b) if chunked else b)
            self.wfile.flush()

        split = int(q.get("split", 0))
        if split:
            out(data[:split])
            if "gate" in q:
                self.server.gate(q["gate"]).wait(20)
            elif self._wait(float(q.get("pause", 1))):
                return
        if q.get("cut"):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        out(data[split:])
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


class ControlledOrigin(Origin):
    """An Origin whose handler is ControlledOriginHandler: /_ctl/ paths with
    chosen headers, delays, gates and cuts; count() of the requests seen."""

    def __init__(self, root):
        self.port = free_port()
        httpd = _OriginServer(("127.0.0.1", self.port), ControlledOriginHandler)
        httpd.serial = 0
        httpd.gates = {}
        httpd.overrides = {}
        httpd.file_holds = {}
        httpd.file_headers = {}  # path -> extra response headers of that file

        def gate(name):
            with httpd.lock:
                return httpd.gates.setdefault(name, threading.Event())

        httpd.gate = gate
        self._serve(httpd, root)

    def release(self, name):
        """Lets the responses waiting at gate `name` send the rest."""
        self.httpd.gate(name).set()

    def hold_file(self, path):
        """Answers for the file at `path` wait until release_file(path)."""
        with self.httpd.lock:
            self.httpd.file_holds[path] = threading.Event()

    def release_file(self, path):
        with self.httpd.lock:
            ev = self.httpd.file_holds.pop(path, None)
        if ev is not None:
            ev.set()

    def rearm(self, name):
        """Makes later responses wait at gate `name` again."""
        self.httpd.gate(name).clear()

    def override(self, name, **params):
        """Parameters for /_ctl/<name> that win over its query (none: clear)."""
        with self.httpd.lock:
            self.httpd.overrides[name] = dict(params)

    def close(self):
        with self.httpd.lock:
            gates = list(self.httpd.gates.values())
        for g in gates:  # nothing stays parked at a gate
            g.set()
        super().close()

    def count(self, path, method=None):
        """How many requests this origin received for `path` (exact, query
        included; or every query of it when path has no '?')."""
        n = 0
        for r in self.requests:
            p = r["path"] if "?" in path else r["path"].split("?", 1)[0]
            if p == path and (method is None or r["method"] == method):
                n += 1
        return n


# ---------------------------------------------------------------- media ---

def make_media(d):
    """Sample media in directory d; returns a dict of name -> path."""
    os.makedirs(d, exist_ok=True)
    out = {}
    png = os.path.join(d, ".src.png")
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=2400x1600", "-frames:v", "1", png],
        check=True,
        timeout=60,
    )
    out["photo.jpg"] = os.path.join(d, "photo.jpg")
    subprocess.run(["vips", "copy", png, out["photo.jpg"] + "[Q=90]"], check=True, timeout=60)
    out["alpha.png"] = os.path.join(d, "alpha.png")
    small = os.path.join(d, ".small.png")
    subprocess.run(["vips", "resize", png, small, "0.25"], check=True, timeout=60)
    subprocess.run(["vips", "bandjoin_const", small, out["alpha.png"], "128"], check=True, timeout=60)
    os.unlink(png)
    os.unlink(small)
    out["bad.jpg"] = os.path.join(d, "bad.jpg")
    with open(out["bad.jpg"], "wb") as f:
        f.write(b"NOT AN IMAGE, JUST NOISE " + random.Random(7).randbytes(50000))
    out["hello.txt"] = os.path.join(d, "hello.txt")
    with open(out["hello.txt"], "w") as f:
        f.write("hello from the test origin\n")
    os.makedirs(os.path.join(d, "sub"), exist_ok=True)
    with open(os.path.join(d, "sub", "hello.txt"), "w") as f:
        f.write("hello from sub\n")
    out["blob.bin"] = os.path.join(d, "blob.bin")
    with open(out["blob.bin"], "wb") as f:
        f.write(pattern_bytes(3 * 1024 * 1024 + 17, seed=3))
    return out


def vips_field(path, field):
    r = subprocess.run(["vipsheader", "-f", field, path], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"vipsheader -f {field} {path}: {r.stderr.strip()}"
    return r.stdout.strip()


def image_info(content, tmpdir, name="out"):
    """Writes bytes to a file and returns width, height, loader, bands."""
    path = os.path.join(tmpdir, f"{name}-{time.monotonic_ns()}")
    with open(path, "wb") as f:
        f.write(content)
    return {
        "width": int(vips_field(path, "width")),
        "height": int(vips_field(path, "height")),
        "loader": vips_field(path, "vips-loader"),
        "bands": int(vips_field(path, "bands")),
    }


# ------------------------------------------------------------------ yaml ---

def _scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent=0):
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, dict) and v:
                lines.append(f"{pad}{k}:")
                lines.append(to_yaml(v, indent + 1))
            elif isinstance(v, list) and v and any(isinstance(i, dict) for i in v):
                lines.append(f"{pad}{k}:")
                lines.append(to_yaml(v, indent + 1))
            elif isinstance(v, list):
                lines.append(f"{pad}{k}: [" + ", ".join(_scalar(i) for i in v) + "]")
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(obj, list):
        for item in obj:
            body = to_yaml(item, indent + 1).split("\n")
            first = body[0][len(pad) + 2 :]
            lines.append(f"{pad}- {first}")
            lines.extend(body[1:])
    return "\n".join(lines)


def deep_merge(base, over):
    out = dict(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------- stack ---

class Proc:
    def __init__(self, name, argv, log_path, cwd):
        self.name = name
        self.log_path = log_path
        self.argv = argv
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd)
        self.pid = self.popen.pid
        self.expected_exit = False  # set when a test kills or stops it on purpose
        self.metrics_port = None

    def alive(self):
        return self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def kill9(self):
        self.expected_exit = True
        self.signal(signal.SIGKILL)
        self.popen.wait(10)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout=10):
        """SIGTERM, wait, SIGKILL after `timeout`. Returns (returncode,
        problem or None)."""
        problem = None
        rc = self.popen.poll()
        if rc is not None:
            if not self.expected_exit and rc != 0:
                problem = f"{self.name} (pid {self.pid}) had exited on its own with status {rc}"
        else:
            try:
                os.kill(self.pid, signal.SIGCONT)  # in case a test left it stopped
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                rc = self.popen.wait(timeout)
                if rc != 0 and not self.expected_exit:
                    problem = f"{self.name} (pid {self.pid}) exited with status {rc} after SIGTERM"
            except subprocess.TimeoutExpired:
                self.popen.kill()
                rc = self.popen.wait(10)
                if not self.expected_exit:
                    problem = f"{self.name} (pid {self.pid}) did not exit within {timeout}s of SIGTERM; killed"
        self._log.close()
        return rc, problem


def parse_metrics(text):
    """[(name, {label: value}, float)] from Prometheus text."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m:
            continue
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.append((m.group(1), labels, float(m.group(4))))
    return out


def metric_value(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`, or None."""
    vals = [v for n, l, v in parse_metrics(text) if n == name and all(l.get(k) == str(x) for k, x in labels.items())]
    return sum(vals) if vals else None


class Stack:
    """One gateway plus image workers, with their config in `workdir`.

    vhosts: list of vhost dicts as in refract.yaml. Other sections are
    merged over the defaults below."""

    def __init__(self, workdir, vhosts, gateway=None, bus=None, image_worker=None, vhost_defaults=None, workers=1,
                 start=True, log_level="info", video_workers=0, video_worker=None, storgate=None,
                 scheduler_bus=False):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.port, self.admin_port, self.bus_port = free_ports(3)
        self.config = {
            "gateway": deep_merge(
                {
                    "listen": f"127.0.0.1:{self.port}",
                    "admin_listen": f"127.0.0.1:{self.admin_port}",
                    "threads": 2,
                    "drain_timeout": "5s",
                    "origin": {"connect_timeout": "2s", "read_timeout": "5s"},
                    "cache": {"dir": os.path.join(workdir, "cache")},
                },
                gateway,
            ),
            "bus": deep_merge(
                {
                    "endpoint": f"tcp://127.0.0.1:{self.bus_port}",
                    # 5 s of silence before a peer is dead. Shorter values were seen
                    # to expire healthy workers while a benchmark saturated the
                    # 2-core machine (every process stalled for ~4 s); tests of
                    # failure detection set their own, short liveness.
                    "heartbeat_interval": "100ms",
                    "liveness": 50,
                    "queue_max": 64,
                    "job_timeout": "10s",
                    "retries": 1,
                },
                bus,
            ),
        }
        if vhost_defaults:
            self.config["vhost_defaults"] = vhost_defaults
        self.config["vhosts"] = vhosts
        self.config["image_worker"] = deep_merge({"jobs": 2, "vips_concurrency": 1, "max_pixels": 100000000},
                                                 image_worker)
        if video_workers or video_worker:
            self.config["video_worker"] = deep_merge({"jobs": 2}, video_worker)
        self.s3_port = None
        if storgate is not None:  # the S3 API: storgate.listen on a port of its own
            # a test that must name the port in its own config (an aws_s3
            # endpoint on this very S3 API) chooses it as storgate.listen
            listen = storgate.get("listen")
            self.s3_port = int(listen.rsplit(":", 1)[1]) if listen else free_port()
            # Throttling (on by default, as the seed says) would pause a
            # scheduler's items whenever the test machine is busy: off unless
            # a test turns it on.
            self.config["storgate"] = deep_merge({"listen": f"127.0.0.1:{self.s3_port}",
                                                  "throttling": {"enable": False}}, storgate)
        # The scheduler's state (shared with the gateway: events/) and, with
        # scheduler_bus, its own broker, which the workers also connect to.
        self.config["storgate_scheduler"] = {"state_dir": os.path.join(workdir, "sg-state"), "jobs": 2}
        if scheduler_bus:
            ep = f"tcp://127.0.0.1:{free_port()}"
            self.config["storgate_scheduler"]["bus_endpoint"] = ep
            self.config["bus"]["connect"] = [self.config["bus"]["endpoint"], ep]
        self.schedulers = []
        self.config["log"] = {"level": log_level}
        self.cfg_path = os.path.join(workdir, "refract.yaml")
        self.write_config()
        self.gw = None
        self.old_gateways = []
        self.workers = []
        self.problems = []
        LIVE_STACKS.append(self)
        if start:
            try:
                self.start_gateway()
                for _ in range(workers):
                    self.add_worker(wait=False)
                for _ in range(video_workers):
                    self.add_video_worker(wait=False)
                self.wait_workers(workers)
                if video_workers:
                    self.wait_workers(video_workers, service="video")
            except BaseException:
                self.close(raise_problems=False)
                raise

    # -- config
    def write_config(self, config=None, path=None):
        text = to_yaml(config if config is not None else self.config) + "\n"
        path = path or self.cfg_path
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return path

    # -- processes
    def start_gateway(self, wait=True):
        n = len(self.old_gateways) + (1 if self.gw else 0)
        if self.gw is not None:
            self.old_gateways.append(self.gw)
        self.gw = Proc("gateway", [GATEWAY_BIN, "-c", self.cfg_path], os.path.join(self.dir, f"gateway{n or ''}.log"),
                       REPO)
        if wait:
            self.wait_healthy()
        return self.gw

    def wait_healthy(self, timeout=10):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if not self.gw.alive():
                raise AssertionError(f"gateway exited with {self.gw.popen.returncode} at start:\n{self.gw.log()}")
            try:
                r = http("GET", self.admin("/healthz"), timeout=2)
                if r.status_code == 200:
                    return
                last = r.status_code
            except requests.RequestException as e:
                last = e
            time.sleep(0.05)
        raise AssertionError(f"gateway /healthz not 200 within {timeout}s ({last}):\n{self.gw.log()}")

    def add_worker(self, jobs=None, wait=True, service="image"):
        """Starts a worker of `service` ("image" or "video") with its own
        metrics port; wait: until the gateway counts it."""
        i = len(self.workers)
        mport = free_port()
        cfg = json.loads(json.dumps(self.config))
        section = f"{service}_worker"
        cfg.setdefault(section, {})
        cfg[section]["metrics_listen"] = f"127.0.0.1:{mport}"
        if jobs is not None:
            cfg[section]["jobs"] = jobs
        path = self.write_config(cfg, os.path.join(self.dir, f"worker{i}.yaml"))
        binary = WORKER_BIN if service == "image" else VIDEO_WORKER_BIN
        w = Proc(f"worker{i}", [binary, "-c", path], os.path.join(self.dir, f"worker{i}.log"), REPO)
        w.metrics_port = mport
        w.service = service
        self.workers.append(w)
        if wait:
            self.wait_workers(sum(1 for x in self.workers if x.alive() and x.service == service), service=service)
        return w

    def add_scheduler(self, name=None, wait=True, **section):
        """Starts a refract-storgate-scheduler on this stack's config, with
        its own metrics port (storgate_scheduler.name = name, other keys of
        that section from `section`); wait: until its /healthz answers."""
        i = len(self.schedulers)
        mport = free_port()
        cfg = json.loads(json.dumps(self.config))
        sec = cfg["storgate_scheduler"]
        sec["metrics_listen"] = f"127.0.0.1:{mport}"
        sec["name"] = name or f"node{i}"
        sec.update(section)
        path = self.write_config(cfg, os.path.join(self.dir, f"scheduler{i}.yaml"))
        p = Proc(f"scheduler{i}", [SCHEDULER_BIN, "-c", path], os.path.join(self.dir, f"scheduler{i}.log"), REPO)
        p.metrics_port = mport
        self.schedulers.append(p)
        if wait:
            deadline = time.time() + 10
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{mport}/healthz", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if not p.alive() or time.time() > deadline:
                    raise AssertionError(f"scheduler{i} did not start:\n" + p.log())
                time.sleep(0.05)
        return p

    def add_prewarm(self, wait=True, **section):
        """Starts a refract-prewarm on this stack's config, with its own
        metrics port (other keys of the prewarm section from `section`:
        brokers, topic, …); wait: until its /healthz answers. It is kept
        with the schedulers, so that close() stops it and logs() shows it;
        read its metrics with scheduler_metric."""
        i = sum(1 for p in self.schedulers if p.name.startswith("prewarm"))
        mport = free_port()
        cfg = json.loads(json.dumps(self.config))
        cfg["prewarm"] = dict(section, metrics_listen=f"127.0.0.1:{mport}")
        path = self.write_config(cfg, os.path.join(self.dir, f"prewarm{i}.yaml"))
        p = Proc(f"prewarm{i}", [PREWARM_BIN, "-c", path], os.path.join(self.dir, f"prewarm{i}.log"), REPO)
        p.metrics_port = mport
        self.schedulers.append(p)
        if wait:
            deadline = time.time() + 10
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{mport}/healthz", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if not p.alive() or time.time() > deadline:
                    raise AssertionError(f"prewarm{i} did not start:\n" + p.log())
                time.sleep(0.05)
        return p

    def scheduler_metric(self, p, name, **labels):
        text = requests.get(f"http://127.0.0.1:{p.metrics_port}/metrics", timeout=5).text
        return metric_value(text, name, **labels)

    def add_video_worker(self, jobs=None, wait=True):
        return self.add_worker(jobs=jobs, wait=wait, service="video")

    def wait_workers(self, n, timeout=10, service="image"):
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            for w in self.workers:
                if not w.alive() and not w.expected_exit:
                    raise AssertionError(f"{w.name} exited with {w.popen.returncode}:\n{w.log()}")
            try:
                got = self.workers_connected(service)
                if got == n:
                    return
            except requests.RequestException as e:
                got = e
            time.sleep(0.05)
        raise AssertionError(f"refract_bus_workers{{service=\"{service}\"}} is {got}, not {n}, after {timeout}s")

    def workers_connected(self, service="image"):
        v = metric_value(self.metrics(), "refract_bus_workers", service=service)
        return int(v) if v is not None else 0

    # -- urls and requests
    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def admin(self, path):
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def get(self, path, host=None, **kw):
        return http("GET", self.url(path), host=host, **kw)

    def request(self, method, path, host=None, **kw):
        return http(method, self.url(path), host=host, **kw)

    def metrics(self):
        r = http("GET", self.admin("/metrics"), timeout=5)
        r.raise_for_status()
        return r.text

    def metric(self, name, **labels):
        return metric_value(self.metrics(), name, **labels)

    def worker_metrics(self, w):
        r = http("GET", f"http://127.0.0.1:{w.metrics_port}/metrics", timeout=5)
        r.raise_for_status()
        return r.text

    # -- logs
    def procs(self):
        return self.old_gateways + ([self.gw] if self.gw else []) + self.workers + self.schedulers

    def logs(self, tail=150):
        parts = []
        for p in self.procs():
            lines = p.log().splitlines()
            parts.append(f"---- {p.name} ({p.log_path}, last {min(tail, len(lines))} of {len(lines)} lines) ----")
            parts.extend(lines[-tail:])
        return "\n".join(parts)

    def close(self, raise_problems=True):
        if self in LIVE_STACKS:
            LIVE_STACKS.remove(self)
        # Schedulers and workers first: the gateway then sees clean DISCONNECTs.
        for p in (list(reversed(self.schedulers)) + list(reversed(self.workers)) + [g for g in self.old_gateways] +
                  ([self.gw] if self.gw else [])):
            _, problem = p.stop()
            if problem:
                self.problems.append(problem)
        if self.problems and raise_problems:
            raise AssertionError("; ".join(self.problems) + "\n" + self.logs())


# ------------------------------------------------------ minimal HTTP/2 ---
# curl 7.88.1 cannot reuse a prior-knowledge HTTP/2 connection (a second
# request fails with "Error in the HTTP2 framing layer", against nginx too),
# so multiplexing is tested with this small h2c client: GETs only, HPACK
# without indexing on our side, and just enough decoding to read :status.

def _hpack_int(value, prefix_bits, first_byte_flags=0):
    maxp = (1 << prefix_bits) - 1
    if value < maxp:
        return bytes([first_byte_flags | value])
    out = [first_byte_flags | maxp]
    value -= maxp
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_literal(name_index, value):
    v = value.encode()
    return _hpack_int(name_index, 4) + _hpack_int(len(v), 7) + v  # literal without indexing, no Huffman


_HUFF_DIGITS = {"00000": "0", "00001": "1", "00010": "2", "011001": "3", "011010": "4", "011011": "5",
                "011100": "6", "011101": "7", "011110": "8", "011111": "9"}


def _hpack_status(block):
    """:status from the start of a response header block."""
    static = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}
    b0 = block[0]
    if b0 & 0x80:
        return static.get(b0 & 0x7F)
    if b0 in (0x48, 0x08, 0x18):  # literal, name = static 8 (:status)
        ln = block[1] & 0x7F
        raw = block[2 : 2 + ln]
        if not block[1] & 0x80:
            return int(raw.decode())
        bits = "".join(f"{x:08b}" for x in raw)
        out, cur = "", ""
        for bit in bits:
            cur += bit
            if cur in _HUFF_DIGITS:
                out += _HUFF_DIGITS[cur]
                cur = ""
        return int(out[:3])
    return None


def h2_get_many(port, authority, paths, timeout=30, window=1 << 24):
    """Sends every GET on one h2c connection at once. Returns a list (same
    order as paths) of dicts: status, body, reset (RST_STREAM error code or
    None), ended (END_STREAM seen)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    deadline = time.monotonic() + timeout

    def frame(ftype, flags, sid, payload=b""):
        return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload

    # SETTINGS: INITIAL_WINDOW_SIZE = window; connection window raised too
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, (4).to_bytes(2, "big") + window.to_bytes(4, "big"))
              + frame(8, 0, 0, (window - 65535).to_bytes(4, "big")))
    streams = {}
    for i, p in enumerate(paths):
        sid = 1 + 2 * i
        block = b"\x82\x86" + _hpack_literal(4, p) + _hpack_literal(1, authority)
        s.sendall(frame(1, 0x5, sid, block))
        streams[sid] = {"status": None, "body": bytearray(), "reset": None, "ended": False}
    buf = b""

    def need(n):
        nonlocal buf
        while len(buf) < n:
            if time.monotonic() > deadline:
                raise TimeoutError("h2 client deadline")
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            buf += chunk

    goaway = None
    try:
        while not all(st["ended"] or st["reset"] is not None for st in streams.values()):
            need(9)
            ln = int.from_bytes(buf[0:3], "big")
            ftype, flags = buf[3], buf[4]
            sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            need(9 + ln)
            payload, buf = buf[9 : 9 + ln], buf[9 + ln :]
            st = streams.get(sid)
            if ftype == 4 and not flags & 1:  # SETTINGS -> ACK
                s.sendall(frame(4, 1, 0))
            elif ftype == 6 and not flags & 1:  # PING -> ACK
                s.sendall(frame(6, 1, 0, payload))
            elif ftype == 7:  # GOAWAY
                goaway = int.from_bytes(payload[4:8], "big")
                break
            elif ftype == 1 and st is not None:  # HEADERS
                off = 0
                if flags & 0x8:  # PADDED
                    off = 1
                if flags & 0x20:  # PRIORITY
                    off += 5
                if st["status"] is None:
                    st["status"] = _hpack_status(payload[off:])
                if flags & 1:
                    st["ended"] = True
            elif ftype == 0 and st is not None:  # DATA
                data = payload
                if flags & 0x8:
                    data = payload[1 : len(payload) - payload[0]]
                st["body"] += data
                if flags & 1:
                    st["ended"] = True
                if ln:
                    s.sendall(frame(8, 0, 0, ln.to_bytes(4, "big")) + frame(8, 0, sid, ln.to_bytes(4, "big")))
            elif ftype == 3 and st is not None:  # RST_STREAM
                st["reset"] = int.from_bytes(payload[:4], "big")
    finally:
        s.close()
    out = []
    for i in range(len(paths)):
        st = streams[1 + 2 * i]
        st["body"] = bytes(st["body"])
        st["goaway"] = goaway
        out.append(st)
    return out


# ---------------------------------------------------------- kafka mock ---


class KafkaMock:
    """A Kafka cluster for tests: build/bin/refract-kafka-mock
    (tests/tools/kafka_mock.c, librdkafka's mock cluster over loopback TCP,
    in memory). `bootstrap` is its broker list; down() and up() take every
    broker down and back (SIGUSR1 / SIGUSR2, acknowledged on its stdout);
    messages(topic) reads a topic back with kcat. The mock is a test tool,
    so it comes from the normal build/bin whatever REFRACT_BIN says.
    Consumers in other processes should set session.timeout.ms low (~2000)."""

    BIN = os.path.join(REPO, "build", "bin", "refract-kafka-mock")

    def __init__(self, workdir, brokers=1, topics=()):
        self.log_path = os.path.join(workdir, "kafka-mock.log")
        self._log = open(self.log_path, "ab")
        self.popen = subprocess.Popen([self.BIN, str(brokers), *topics], stdout=subprocess.PIPE, stderr=self._log)
        self.bootstrap = self._line(10)

    def _line(self, timeout):
        import select
        if not select.select([self.popen.stdout], [], [], timeout)[0]:
            raise AssertionError("refract-kafka-mock said nothing within %ss" % timeout)
        line = self.popen.stdout.readline().decode().strip()
        if not line:
            raise AssertionError("refract-kafka-mock exited: status %s" % self.popen.poll())
        return line

    def down(self):
        self.popen.send_signal(signal.SIGUSR1)
        assert self._line(5) == "down"

    def up(self):
        self.popen.send_signal(signal.SIGUSR2)
        assert self._line(5) == "up"

    def messages(self, topic, timeout=20):
        """Every message of `topic`, from the start: [{"key", "payload",
        "partition", "offset", …}] as kcat -J gives them."""
        r = subprocess.run(["kcat", "-C", "-b", self.bootstrap, "-t", topic, "-e", "-q", "-J"],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError(f"kcat -C {topic}: status {r.returncode}: {r.stderr}")
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def stop(self):
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.popen.stdout.close()
        self._log.close()
