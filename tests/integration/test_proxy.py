"""Plain proxying: file and http origins, HEAD, Range, conditionals, POST,
HTTP/2, request ids, Cache-Status and origin failures."""
import json
import os
import re
import socket
import time

import pytest

import harness
from harness import curl, one_line, pattern_bytes, sha256

ORIGINS = ["files.test", "web.test"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, origin, media):
    closed = harness.free_port()  # nothing listens there
    st = harness.Stack(
        str(tmp_path_factory.mktemp("proxy")),
        vhosts=[
            {"name": "files.test", "default": True, "origin": "file://" + media["dir"]},
            {"name": "web.test", "origin": origin.url},
            {"name": "down.test", "origin": f"http://127.0.0.1:{closed}"},
        ],
        gateway={"origin": {"read_timeout": "1s", "connect_timeout": "1s"}},
        workers=0,
    )
    yield st
    st.close()


def _file(media, name="blob.bin"):
    with open(media[name], "rb") as f:
        return f.read()


def _raw(st, request_bytes, timeout=10):
    """Sends raw bytes and returns everything until the server closes."""
    with socket.create_connection(("127.0.0.1", st.port), timeout=timeout) as s:
        s.sendall(request_bytes)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


@pytest.mark.parametrize("host", ORIGINS)
def test_get_body_identical(stack, media, host):
    data = _file(media)
    r = stack.get("/blob.bin", host=host)
    assert r.status_code == 200
    assert len(r.content) == len(data)
    assert sha256(r.content) == sha256(data)
    assert int(r.headers["Content-Length"]) == len(data)


@pytest.mark.parametrize("host", ORIGINS)
def test_head_has_headers_and_no_body(stack, media, host):
    size = os.path.getsize(media["blob.bin"])
    r = stack.request("HEAD", "/blob.bin", host=host)
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == size
    assert r.content == b""
    # On the wire: nothing at all after the head (the connection closes).
    raw = _raw(stack, f"HEAD /blob.bin HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 200"), raw[:200]
    assert re.search(rb"(?im)^content-length: *%d\r?$" % size, head), head
    assert rest == b"", f"HEAD response carried {len(rest)} body bytes"


@pytest.mark.parametrize("host", ORIGINS)
def test_range_first_100_bytes(stack, media, host):
    data = _file(media)
    r = stack.get("/blob.bin", host=host, headers={"Range": "bytes=0-99"})
    assert r.status_code == 206
    assert r.content == data[:100]
    assert r.headers["Content-Range"] == f"bytes 0-99/{len(data)}"
    assert int(r.headers["Content-Length"]) == 100


@pytest.mark.parametrize("host", ORIGINS)
def test_if_none_match_gives_304(stack, host):
    r = stack.get("/hello.txt", host=host)
    assert r.status_code == 200
    etag = r.headers.get("ETag")
    assert etag, f"no ETag from {host}: {dict(r.headers)}"
    r2 = stack.get("/hello.txt", host=host, headers={"If-None-Match": etag})
    assert r2.status_code == 304
    assert r2.content == b""
    r3 = stack.get("/hello.txt", host=host, headers={"If-None-Match": '"something-else"'})
    assert r3.status_code == 200
    assert r3.content == r.content


@pytest.mark.parametrize("host", ORIGINS)
def test_if_modified_since_gives_304(stack, host):
    r = stack.get("/hello.txt", host=host)
    lm = r.headers.get("Last-Modified")
    assert lm, f"no Last-Modified from {host}"
    r2 = stack.get("/hello.txt", host=host, headers={"If-Modified-Since": lm})
    assert r2.status_code == 304
    assert r2.content == b""
    r3 = stack.get("/hello.txt", host=host, headers={"If-Modified-Since": "Thu, 01 Jan 1998 00:00:00 GMT"})
    assert r3.status_code == 200


def test_post_forwarded_with_body(stack, origin):
    body = pattern_bytes(100000, seed=9).hex().encode()  # 200 KB of text
    r = stack.request("POST", "/_echo?x=1", host="web.test", data=body,
                      headers={"Content-Type": "text/plain", "X-Custom": "kept"})
    assert r.status_code == 200
    echo = r.json()
    assert echo["method"] == "POST"
    assert echo["path"] == "/_echo?x=1"
    assert echo["body"].encode("latin-1") == body
    assert int(echo["headers"]["content-length"]) == len(body)
    assert echo["headers"]["x-custom"] == "kept"
    assert echo["headers"]["host"] == f"127.0.0.1:{origin.port}"
    # The origin sees the same request id as the client.
    assert echo["headers"]["x-request-id"] == r.headers["X-Request-Id"]


def test_post_to_file_origin_is_405(stack):
    r = stack.request("POST", "/hello.txt", host="files.test", data=b"x")
    assert r.status_code == 405
    assert "GET" in r.headers.get("Allow", "")


@pytest.mark.parametrize("host", ORIGINS)
def test_http2_prior_knowledge(stack, media, host, tmp_path):
    out = tmp_path / "h2.bin"
    r = curl(["--http2-prior-knowledge", "-H", f"Host: {host}", "-o", str(out), "-w", "%{http_version} %{http_code}",
              stack.url("/blob.bin")])
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == "2 200"
    assert sha256(out.read_bytes()) == sha256(_file(media))


def _wait_log(st, needle, timeout=3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in st.gw.log():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("host", ORIGINS)
def test_request_id_echoed(stack, host):
    rid = f"client-id-{host}-0123"
    r = stack.get("/hello.txt", host=host, headers={"X-Request-Id": rid})
    assert r.status_code == 200
    assert r.headers["X-Request-Id"] == rid
    assert _wait_log(stack, f"req={rid} "), f"req={rid} not in the gateway log"


@pytest.mark.parametrize("host", ORIGINS)
def test_request_id_created(stack, host):
    r = stack.get("/hello.txt", host=host)
    rid = r.headers.get("X-Request-Id", "")
    assert re.fullmatch(r"[0-9a-f]{32}", rid), rid
    r2 = stack.get("/hello.txt", host=host)
    assert r2.headers["X-Request-Id"] != rid
    assert _wait_log(stack, f"req={rid} "), f"req={rid} not in the gateway log"
    line = [l for l in stack.gw.log().splitlines() if f"req={rid} " in l][0]
    assert "/hello.txt 200" in line, line


def test_invalid_request_id_replaced(stack):
    r = stack.get("/hello.txt", headers={"X-Request-Id": "bad id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"])


@pytest.mark.parametrize("path,host,status,cache_status", [
    ("/hello.txt", "files.test", 200, r"refract; fwd=bypass"),  # file origins are local: not cached
    ("/hello.txt", "web.test", 200, r"refract; (fwd=miss; fwd-status=200|hit)(; .*)?"),
    ("/missing.txt", "files.test", 404, r"refract; fwd=bypass"),
    ("/missing.txt", "down.test", 502, r"refract; fwd=miss"),  # the fill failed before a head
])
def test_cache_status_header(stack, path, host, status, cache_status):
    r = stack.get(path, host=host)
    assert r.status_code == status
    # RFC 9211: what the cache did, on every response.
    assert re.fullmatch(cache_status, r.headers.get("Cache-Status", "")), dict(r.headers)


def test_origin_404_passes_through(stack):
    r = stack.get("/missing.txt", host="web.test")
    assert r.status_code == 404
    assert r.text == "not found at the origin\n"
    r = stack.get("/missing.txt", host="files.test")
    assert r.status_code == 404
    assert one_line(r.text), repr(r.text)


def test_origin_down_is_502_one_line(stack):
    t0 = time.monotonic()
    r = stack.get("/hello.txt", host="down.test")
    assert r.status_code == 502
    assert one_line(r.text), repr(r.text)
    assert time.monotonic() - t0 < 3


def test_origin_head_too_slow_is_504(stack):
    t0 = time.monotonic()
    r = stack.get("/_delay?secs=4", host="web.test")
    took = time.monotonic() - t0
    assert r.status_code == 504
    assert one_line(r.text), repr(r.text)
    assert 0.8 <= took < 3.0, f"504 after {took:.2f}s with read_timeout 1s"


@pytest.mark.parametrize("path", ["/_cut?size=1000000&sent=300000", "/_stall?size=1000000&sent=300000&secs=5"])
def test_origin_failing_mid_body_breaks_the_transfer(stack, path, tmp_path):
    out = tmp_path / "partial.bin"
    t0 = time.monotonic()
    r = curl(["-H", "Host: web.test", "-o", str(out), "-w", "%{http_code} %{size_download}", stack.url(path)],
             timeout=20)
    took = time.monotonic() - t0
    assert r.returncode in (18, 56), f"curl exit {r.returncode} ({r.stderr!r}), wrote {out.stat().st_size} bytes"
    code, size = r.stdout.decode().split()
    assert code == "200"
    assert int(size) < 1000000
    assert took < 6
    # On the wire: the declared length is never met, and the gateway closes.
    raw = _raw(stack, f"GET {path} HTTP/1.1\r\nHost: web.test\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length: *(\d+)", head)
    if m:
        assert int(m.group(1)) == 1000000 and len(body) < 1000000, (head, len(body))
    else:  # chunked: the terminating zero-length chunk must be missing
        assert re.search(rb"(?im)^transfer-encoding: *chunked", head), head
        assert not body.endswith(b"\r\n0\r\n\r\n"), "a broken transfer ended like a complete chunked body"


def test_origin_cut_mid_body_http2(stack):
    r = curl(["--http2-prior-knowledge", "-H", "Host: web.test", "-o", "/dev/null", "-w", "%{size_download}",
              stack.url("/_cut?size=1000000&sent=300000")], timeout=20)
    assert r.returncode != 0, "an HTTP/2 transfer cut at the origin looked complete"
    assert int(r.stdout.decode() or 0) < 1000000


def test_chunked_origin_streamed(stack):
    r = stack.get("/_chunked?n=50&size=20000", host="web.test")
    assert r.status_code == 200
    assert r.content == pattern_bytes(50 * 20000)
    # Chunks arrive as the origin sends them, not at the end.
    with harness.session() as s:
        t0 = time.monotonic()
        resp = s.get(stack.url("/_chunked?n=4&size=1000&pause=0.5"), headers={"Host": "web.test"}, stream=True,
                     timeout=10)
        it = resp.iter_content(chunk_size=None)
        first = next(it)
        t_first = time.monotonic() - t0
        rest = b"".join(it)
        t_all = time.monotonic() - t0
    assert first + rest == pattern_bytes(4000)
    assert t_first < 1.0 and t_all > 1.4, f"first bytes at {t_first:.2f}s, all at {t_all:.2f}s"


# ---- more origin behaviour -------------------------------------------------------

def test_origin_url_prefix(make_stack, origin):
    st = make_stack([{"name": "p.test", "default": True, "origin": origin.url + "/sub"}], workers=0)
    r = st.get("/hello.txt")
    assert r.status_code == 200 and r.text == "hello from sub\n"
    echo = st.get("/_echo?a=b").json()
    assert echo["path"] == "/sub/_echo?a=b"


def test_gateway_writes_its_own_server_and_date(stack):
    r = stack.get("/hello.txt", host="web.test")
    assert r.headers["Server"] == "refract"
    assert r.headers.get("Date")
    assert "test-origin" not in str(r.headers)


def test_origin_body_until_close(stack):
    r = stack.get("/_eof?size=500000", host="web.test")
    assert r.status_code == 200
    assert r.content == pattern_bytes(500000)
    assert "Content-Length" not in r.headers and r.headers.get("Transfer-Encoding") == "chunked"


@pytest.mark.parametrize("path,why", [
    ("/_headers?n=150", "more than 100 header lines"),
    ("/_garbage", "not HTTP"),
    ("/_close", "closed without answering"),
])
def test_broken_origin_responses_are_502(stack, path, why):
    r = stack.get(path, host="web.test")
    assert r.status_code == 502, why
    assert one_line(r.text), repr(r.text)
    # and the origin pool is still healthy afterwards
    assert stack.get("/hello.txt", host="web.test").text == "hello from the test origin\n"


def test_few_origin_headers_are_fine(stack):
    r = stack.get("/_headers?n=50", host="web.test")
    assert r.status_code == 200 and r.text == "ok\n"
    assert r.headers["X-Filler-49"] == "x" * 20


def test_unresolvable_origin_is_502(make_stack):
    st = make_stack([{"name": "x.test", "default": True, "origin": "http://no-such-host.invalid:8080"}], workers=0)
    t0 = time.monotonic()
    r = st.get("/hello.txt")
    assert r.status_code == 502
    assert one_line(r.text), repr(r.text)
    assert time.monotonic() - t0 < 5


def test_pooled_connections_survive_aborted_and_head_requests(stack, media):
    data = _file(media)
    for i in range(8):
        # abort mid-body: the origin connection must not go back to the pool half-read
        with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as s:
            s.sendall(b"GET /blob.bin HTTP/1.1\r\nHost: web.test\r\n\r\n")
            got = 0
            while got < 200000:
                b = s.recv(65536)
                assert b
                got += len(b)
        h = stack.request("HEAD", "/blob.bin", host="web.test")
        assert h.status_code == 200 and int(h.headers["Content-Length"]) == len(data)
        etag = h.headers["ETag"]
        assert stack.get("/blob.bin", host="web.test", headers={"If-None-Match": etag}).status_code == 304
        r = stack.get("/blob.bin", host="web.test")
        assert r.status_code == 200
        assert sha256(r.content) == sha256(data), f"round {i}: body corrupted after pooled reuse"
        assert stack.get("/_echo", host="web.test").json()["method"] == "GET"
    time.sleep(0.3)
    assert stack.metric("refract_http_requests_inflight") == 0


def test_large_post_body(stack):
    body = pattern_bytes(3 * 1024 * 1024, seed=5)
    r = stack.request("POST", "/_echo", host="web.test", data=body, timeout=30)
    assert r.status_code == 200
    echo = r.json()
    assert int(echo["headers"]["content-length"]) == len(body)
    assert sha256(echo["body"].encode("latin-1")) == sha256(body)


@pytest.mark.parametrize("host", ORIGINS)
def test_http2_multiplexed_streams(stack, media, host):
    """12 concurrent streams on one HTTP/2 connection (curl 7.88.1 cannot
    reuse an h2c connection, see harness.h2_get_many)."""
    paths = []
    for i in range(4):
        paths += [f"/blob.bin?i={i}", f"/hello.txt?i={i}", f"/missing-{i}.txt"]
    res = harness.h2_get_many(stack.port, host, paths)
    data = _file(media)
    for p, r in zip(paths, res):
        assert r["reset"] is None and r["ended"], (p, r["reset"], r["goaway"])
        if p.startswith("/blob"):
            assert r["status"] == 200 and sha256(r["body"]) == sha256(data), p
        elif p.startswith("/hello"):
            assert r["status"] == 200 and r["body"] == b"hello from the test origin\n", p
        else:
            assert r["status"] == 404, (p, r["status"])


def test_http2_post(stack, tmp_path):
    src = tmp_path / "post.bin"
    src.write_bytes(b"a" * 100000)
    r = curl(["--http2-prior-knowledge", "-H", "Host: web.test", "--data-binary", f"@{src}",
              stack.url("/_echo")])
    assert r.returncode == 0, r.stderr
    echo = json.loads(r.stdout)
    assert echo["method"] == "POST" and echo["body"] == "a" * 100000


@pytest.mark.parametrize("rid,kept", [("a" * 36, True), ("b" * 37, False), ("A-b_c.9", True), ("x/y", False),
                                      ("", False)])
def test_request_id_rules(stack, rid, kept):
    r = stack.get("/hello.txt", headers={"X-Request-Id": rid})
    if kept:
        assert r.headers["X-Request-Id"] == rid
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Request-Id"]), r.headers["X-Request-Id"]


@pytest.mark.parametrize("method,path,host,status,cache_status", [
    ("GET", "/photo.jpg/dims/resize/0x0", "files.test", 400, "refract; fwd=bypass"),
    ("POST", "/hello.txt", "files.test", 405, "refract; fwd=bypass"),
    ("HEAD", "/missing.txt", "files.test", 404, "refract; fwd=bypass"),
    ("GET", "/x", "down.test", 502, "refract; fwd=miss"),
])
def test_every_response_has_request_id_and_cache_status(stack, method, path, host, status, cache_status):
    r = stack.request(method, path, host=host, data=b"x" if method == "POST" else None)
    assert r.status_code == status
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers.get("X-Request-Id", "")), dict(r.headers)
    assert r.headers.get("Cache-Status") == cache_status, dict(r.headers)


@pytest.mark.timeout_s(30)
def test_idle_client_connection_closed_after_client_timeout(make_stack, media):
    st = make_stack([{"name": "f.test", "default": True, "origin": "file://" + media["dir"]}], workers=0,
                    gateway={"client_timeout": "1s"})
    with socket.create_connection(("127.0.0.1", st.port), timeout=10) as s:
        s.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: f.test\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        s.settimeout(8)
        rest = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            rest += b
        idle = time.monotonic() - t0
    assert 0.7 < idle < 4, f"idle connection closed after {idle:.2f}s with client_timeout 1s"


@pytest.mark.parametrize("raw_path", ["/../secret.txt", "/%2e%2e/secret.txt", "/sub/../../secret.txt"])
def test_file_origin_path_cannot_escape(stack, media, raw_path):
    with open(os.path.join(os.path.dirname(media["dir"]), "secret.txt"), "w") as f:
        f.write("TOP-SECRET-BYTES\n")
    raw = _raw(stack, f"GET {raw_path} HTTP/1.1\r\nHost: files.test\r\nConnection: close\r\n\r\n".encode())
    assert b"TOP-SECRET" not in raw, raw[:300]


def test_post_with_expect_100_continue(stack, tmp_path):
    src = tmp_path / "big-post.bin"
    src.write_bytes(pattern_bytes(2 * 1024 * 1024, seed=4).hex()[: 2 * 1024 * 1024].encode())
    r = curl(["-H", "Host: web.test", "-H", "Expect: 100-continue", "--data-binary", f"@{src}",
              stack.url("/_echo")], timeout=30)
    assert r.returncode == 0, r.stderr
    echo = json.loads(r.stdout)
    assert echo["method"] == "POST"
    assert echo["body"].encode() == src.read_bytes()


def test_standard_hop_by_hop_request_headers_not_forwarded(stack):
    echo = stack.get("/_echo", host="web.test", headers={
        "Keep-Alive": "timeout=5", "TE": "trailers", "Upgrade": "websocket", "Proxy-Authorization": "Basic eA==",
        "X-End-To-End": "yes"}).json()["headers"]
    assert echo.get("x-end-to-end") == "yes"
    for h in ("keep-alive", "te", "upgrade", "proxy-authorization"):
        assert h not in echo, f"hop-by-hop {h} reached the origin: {echo}"


def test_multiple_set_cookie_preserved(stack):
    raw = _raw(stack, b"GET /_cookies HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
    head = raw.partition(b"\r\n\r\n")[0].decode().lower()
    assert "set-cookie: a=1; path=/" in head and "set-cookie: b=2; path=/" in head, head
    assert "cache-control: max-age=60" in head


def test_connection_nominated_headers_are_dropped(stack):
    echo = stack.get("/_echo", host="web.test",
                     headers={"Connection": "keep-alive, X-Client-Hop", "X-Client-Hop": "secret"}).json()["headers"]
    raw = _raw(stack, b"GET /_cookies HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
    head = raw.partition(b"\r\n\r\n")[0].decode().lower()
    assert "x-client-hop" not in echo, echo
    assert "x-origin-hop" not in head, head


def test_chunked_request_body_forwarded(stack, tmp_path):
    src = tmp_path / "chunked-post.txt"
    src.write_bytes(b"0123456789" * 30000)
    r = curl(["-H", "Host: web.test", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{src}",
              stack.url("/_echo")], timeout=30)
    assert r.returncode == 0, r.stderr
    echo = json.loads(r.stdout)
    assert echo["body"].encode() == src.read_bytes()
    assert int(echo["headers"]["content-length"]) == 300000
    assert "transfer-encoding" not in echo["headers"]
