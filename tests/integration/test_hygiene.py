"""Hostile requests at the edge: paths that try to climb out of an origin's
prefix or smuggle a NUL, request framings that hide a second request, Range
sets that multiply a response, and a second gateway on a taken port.

Each test here reproduces a finding of a security probe against the gateway
and fails on the build that had it."""
import os
import re
import socket
import subprocess
import time

import pytest

import harness
from harness import pattern_bytes


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A web root with a public prefix (/static) and a secret beside it."""
    d = str(tmp_path_factory.mktemp("site"))
    os.makedirs(os.path.join(d, "static", "sub"))
    with open(os.path.join(d, "secret.txt"), "w") as f:
        f.write("TOP SECRET\n")
    with open(os.path.join(d, "static", "hello.txt"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(d, "static", "a b.txt"), "w") as f:
        f.write("spaced\n")
    with open(os.path.join(d, "static", "big.bin"), "wb") as f:
        f.write(pattern_bytes(1 << 20, seed=3))
    return d


@pytest.fixture(scope="module")
def site_origin(site):
    o = harness.Origin(site)
    yield o
    o.close()


@pytest.fixture
def stack(make_stack, site, site_origin):
    return make_stack(
        [
            # The pass-through path: what reaches the origin is the point here
            # (the cache's own Range handling is tested in test_cache.py).
            {"name": "web.test", "default": True, "origin": site_origin.url + "/static", "cache": {"enable": False}},
            {"name": "files.test", "origin": "file://" + os.path.join(site, "static")},
        ],
        workers=0,
    )


def _raw(st, data, timeout=10):
    """Sends raw bytes on one connection; returns all until the server closes."""
    with socket.create_connection(("127.0.0.1", st.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                return out
            out += b


def _responses(raw):
    return re.findall(rb"HTTP/1\.[01] (\d{3})", raw)


ESCAPES = ["/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/..%2fsecret.txt", "/..%2Fsecret.txt",
           "/sub/../../secret.txt", "/./../secret.txt", "/..%5csecret.txt"]


@pytest.mark.parametrize("path", ESCAPES)
@pytest.mark.parametrize("host", ["web.test", "files.test"])
def test_no_path_climbs_out_of_the_origin_prefix(stack, site_origin, path, host):
    before = len(site_origin.requests)
    r = _raw(stack, b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path.encode(), host.encode()))
    assert b"TOP SECRET" not in r
    head, _, body = r.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert body.startswith(b"bad request path: "), body
    assert body.count(b"\n") == 1, body  # one line
    assert b"x-request-id: " in head.lower() and b"cache-status: refract; fwd=bypass" in head.lower(), head
    assert len(site_origin.requests) == before, "the origin was contacted"


@pytest.mark.parametrize("path,want_origin_path,body", [
    ("/sub/../hello.txt", "/static/hello.txt", b"hello\n"),
    ("/./hello.txt", "/static/hello.txt", b"hello\n"),
    ("/%68ello.txt", "/static/hello.txt", b"hello\n"),  # unreserved escapes are decoded
    ("/a%20b.txt", "/static/a%20b.txt", b"spaced\n"),    # others are kept
])
def test_canonical_path_reaches_the_origin(stack, site_origin, path, want_origin_path, body):
    r = stack.get(path, host="web.test")
    assert r.status_code == 200 and r.content == body
    assert site_origin.requests[-1]["path"] == want_origin_path
    r = stack.get(path, host="files.test")
    assert r.status_code == 200 and r.content == body


@pytest.mark.parametrize("path", ["/hello.txt%00.jpg", "/%00", "/hello.txt%0d%0aX-Evil:%201", "/hello.txt%7f"])
def test_control_bytes_in_path_are_400(stack, path):
    for host in ("files.test", "web.test"):
        r = stack.get(path, host=host)
        assert r.status_code == 400, (host, r.status_code, r.content[:100])
        assert r.text == "bad request path: control character in the path\n"
        assert "image/jpeg" not in r.headers.get("Content-Type", "")


def test_nul_in_an_image_source_is_400(make_stack, media):
    st = make_stack([{"name": "i.test", "default": True, "origin": "file://" + media["dir"]}], workers=0)
    r = st.get("/photo.jpg%00.txt/dims/resize/10")
    assert r.status_code == 400
    assert r.text == "bad request path: control character in the path\n"


def test_directory_redirect_is_well_formed(stack):
    r = stack.get("/sub", host="files.test")
    assert r.status_code == 301
    assert r.reason == "Moved Permanently"
    assert r.headers["Location"].endswith("/sub/")
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers.get("X-Request-Id", "")), dict(r.headers)
    assert r.headers.get("Cache-Status") == "refract; fwd=bypass", dict(r.headers)


SMUGGLING = [
    (b"POST /hello.txt HTTP/1.1\r\nHost: web.test\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n",
     "more than one Content-Length header"),
    (b"POST /hello.txt HTTP/1.1\r\nHost: web.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     "Content-Length together with Transfer-Encoding"),
    (b"GET /hello.txt HTTP/1.1\r\nHost: files.test\r\nHost: web.test\r\n\r\n", "more than one Host header"),
    (b"GET /hello.txt HTTP/1.1\r\n\r\n", "an HTTP/1.1 request needs a Host header"),
]


@pytest.mark.parametrize("head,reason", SMUGGLING)
def test_smuggling_shapes_are_400_and_close(stack, site_origin, head, reason):
    # Whatever follows on the connection must never run as a request.
    smuggled = b"GET /hello.txt?smuggled=1 HTTP/1.1\r\nHost: web.test\r\n\r\n"
    before = len(site_origin.requests)
    raw = _raw(stack, head + smuggled)
    assert _responses(raw) == [b"400"], raw[:400]
    head_out, _, body = raw.partition(b"\r\n\r\n")
    assert body == b"bad request: " + reason.encode() + b"\n"
    assert b"connection: close" in head_out.lower()
    assert not any("smuggled" in q["path"] for q in site_origin.requests[before:])


def test_http10_without_host_uses_the_default_vhost(stack):
    raw = _raw(stack, b"GET /hello.txt HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"hello\n"), raw[:200]


def test_sane_requests_keep_the_connection(stack):
    """Two ordinary requests on one connection both answer: the checks only
    refuse what is ambiguous."""
    req = b"GET /hello.txt HTTP/1.1\r\nHost: web.test\r\n\r\n"
    raw = _raw(stack, req + req.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert _responses(raw) == [b"200", b"200"], raw[:400]


@pytest.mark.parametrize("host", ["files.test", "web.test"])
def test_excessive_ranges_get_the_object_once(stack, site_origin, host):
    size = 1 << 20
    rng = "bytes=0-" + ",0-" * 499
    with harness.session() as s:
        r = s.get(stack.url("/big.bin"), headers={"Host": host, "Range": rng}, timeout=30, stream=True)
        data = r.raw.read(4 * size + 1)
    assert r.status_code == 200, r.status_code
    assert len(data) == size and data == pattern_bytes(size, seed=3)
    if host == "web.test":
        assert "range" not in {k.lower() for k in site_origin.requests[-1]["headers"]}


@pytest.mark.parametrize("host", ["files.test", "web.test"])
def test_sane_ranges_still_work(stack, site_origin, host):
    r = stack.get("/big.bin", host=host, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == pattern_bytes(1 << 20, seed=3)[10:20]
    r = stack.get("/big.bin", host=host, headers={"Range": "bytes=0-0,-1"})
    if host == "files.test":
        assert r.status_code == 206
        assert r.headers["Content-Type"].startswith("multipart/byteranges")
    else:  # the test origin answers multi-range with 200; what matters is that it was asked
        hdrs = {k.lower(): v for k, v in site_origin.requests[-1]["headers"].items()}
        assert hdrs.get("range") == "bytes=0-0,-1"


def test_second_gateway_on_a_taken_port_exits_1(make_stack, site, tmp_path):
    st = make_stack([{"name": "files.test", "default": True, "origin": "file://" + site}], workers=0)
    cfg = dict(st.config)
    admin, bus = harness.free_ports(2)
    cfg["gateway"] = dict(cfg["gateway"], admin_listen=f"127.0.0.1:{admin}")
    cfg["bus"] = dict(cfg["bus"], endpoint=f"tcp://127.0.0.1:{bus}")
    path = st.write_config(cfg, str(tmp_path / "second.yaml"))
    t0 = time.monotonic()
    p = subprocess.run([harness.GATEWAY_BIN, "-c", path], capture_output=True, text=True, timeout=20)
    assert p.returncode == 1, (p.returncode, p.stderr[-500:])
    assert f"127.0.0.1:{st.port}" in p.stderr and "in use" in p.stderr, p.stderr[-500:]
    assert time.monotonic() - t0 < 10
    assert st.gw.alive()
    r = st.get("/static/hello.txt")
    assert r.status_code == 200
