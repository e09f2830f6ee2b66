"""Image functions: /<source>/<keyword>/<chain> through the image worker."""
import os
import re
import socket
import subprocess
import time

import pytest

import harness
from harness import image_info, one_line, sha256

FALLBACK = "X-Refract-Fallback"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, origin, media, photo):
    files = "file://" + media["dir"]
    n = len(photo)
    st = harness.Stack(
        str(tmp_path_factory.mktemp("image")),
        vhosts=[
            {"name": "img.test", "default": True, "origin": files},
            {"name": "web.test", "origin": origin.url},
            {"name": "small.test", "origin": origin.url, "dims": {"max_source_size": "200KB"}},
            {"name": "smallfile.test", "origin": files, "dims": {"max_source_size": "200KB"}},
            {"name": "kw.test", "origin": files, "dims": {"keyword": "img"}},
            {"name": "off.test", "origin": files, "dims": {"status": "inactive"}},
            # max_source_size exactly the photo's size, and one byte less
            {"name": "exact.test", "origin": origin.url, "dims": {"max_source_size": n}},
            {"name": "under.test", "origin": origin.url, "dims": {"max_source_size": n - 1}},
            {"name": "exactfile.test", "origin": files, "dims": {"max_source_size": n}},
            {"name": "underfile.test", "origin": files, "dims": {"max_source_size": n - 1}},
        ],
        # The transform path is under test here: every request runs it.
        # (Cached results: test_cache.py, test_purge.py.)
        vhost_defaults={"cache": {"enable": False}},
        workers=1,
        image_worker={"jobs": 2},
    )
    yield st
    st.close()


@pytest.fixture(scope="module")
def photo(media):
    with open(media["photo.jpg"], "rb") as f:
        data = f.read()
    assert len(data) > 200 * 1024, "photo.jpg must be over the small vhosts' max_source_size"
    return data


def _img(st, path, tmp_path, host="img.test", status=200, **kw):
    r = st.get(path, host=host, timeout=30, **kw)
    assert r.status_code == status, f"{path} on {host}: {r.status_code} {r.text[:200]!r}"
    return r, image_info(r.content, str(tmp_path))


@pytest.mark.parametrize("host", ["img.test", "web.test"])
@pytest.mark.parametrize("chain,size", [
    ("resize/500x500", (500, 333)),
    ("resize/x100", (150, 100)),
    ("resize/300", (300, 200)),
    ("resize/300x", (300, 200)),
    ("resize/1000x100", (150, 100)),
])
def test_resize_fits_inside_box(stack, tmp_path, host, chain, size):
    r, info = _img(stack, f"/photo.jpg/dims/{chain}", tmp_path, host=host)
    assert (info["width"], info["height"]) == size
    assert info["loader"] == "jpegload"
    assert r.headers["Content-Type"] == "image/jpeg"
    assert int(r.headers["Content-Length"]) == len(r.content)
    assert r.headers.get("X-Request-Id")
    assert FALLBACK not in r.headers


def test_format_webp(stack, tmp_path):
    r, info = _img(stack, "/photo.jpg/dims/format/webp", tmp_path)
    assert r.headers["Content-Type"] == "image/webp"
    assert info["loader"] == "webpload"
    assert (info["width"], info["height"]) == (2400, 1600)


def test_format_png(stack, tmp_path):
    r, info = _img(stack, "/photo.jpg/dims/resize/400x400/format/png", tmp_path)
    assert r.headers["Content-Type"] == "image/png"
    assert info["loader"] == "pngload"
    assert (info["width"], info["height"]) == (400, 267)


def test_quality_changes_size(stack, tmp_path):
    r20, i20 = _img(stack, "/photo.jpg/dims/resize/800x800/quality/20", tmp_path)
    r90, i90 = _img(stack, "/photo.jpg/dims/resize/800x800/quality/90", tmp_path)
    assert (i20["width"], i20["height"]) == (i90["width"], i90["height"]) == (800, 533)
    assert len(r20.content) < len(r90.content) * 0.7, (len(r20.content), len(r90.content))


def test_chain_of_several(stack, tmp_path):
    r, info = _img(stack, "/photo.jpg/dims/resize/1200x1200/resize/300x300/format/webp/quality/60/optimize",
                   tmp_path)
    assert (info["width"], info["height"]) == (300, 200)
    assert info["loader"] == "webpload"
    assert r.headers["Content-Type"] == "image/webp"


def test_png_with_alpha(stack, tmp_path):
    r, info = _img(stack, "/alpha.png/dims/resize/300x300", tmp_path)
    assert (info["loader"], info["bands"]) == ("pngload", 4)
    assert (info["width"], info["height"]) == (300, 200)
    r, info = _img(stack, "/alpha.png/dims/format/jpeg", tmp_path)
    assert (info["loader"], info["bands"]) == ("jpegload", 3)
    assert r.headers["Content-Type"] == "image/jpeg"


def test_query_string_is_not_part_of_the_chain(stack, tmp_path):
    _, info = _img(stack, "/photo.jpg/dims/resize/120x120?v=3", tmp_path)
    assert (info["width"], info["height"]) == (120, 80)


@pytest.mark.parametrize("path", [
    "/photo.jpg/dims/blur/0",
    "/photo.jpg/dims/resize/0x0",
    "/photo.jpg/dims/resize/abc",
    "/photo.jpg/dims/resize/x",
    "/photo.jpg/dims/resize",
    "/photo.jpg/dims/quality/101",
    "/photo.jpg/dims/quality/0",
    "/photo.jpg/dims/format/bmp",
    "/photo.jpg/dims/",
    "/photo.jpg/dims",
    "/photo.jpg/dims/resize//500x500",
    "/photo.jpg/dims/resize/500x500//format/webp",
    "/photo.jpg/dims/" + "optimize/" * 17,
    "/photo.jpg/dims/Resize/100",
    "/photo.jpg/dims/format/JPEG",
    "/photo.jpg/dims/resize/1234567",
    "/photo.jpg/dims/resize/16385",
    "/photo.jpg/dims/resize/-5",
])
@pytest.mark.parametrize("host", ["img.test", "web.test"])
def test_bad_chain_is_400_one_line(stack, origin, path, host):
    before = len(origin.requests)
    r = stack.get(path, host=host)
    assert r.status_code == 400, f"{path}: {r.status_code} {r.text[:200]!r}"
    assert one_line(r.text), repr(r.text)
    assert r.text.startswith("bad dims chain: "), r.text
    assert len(origin.requests) == before, "a malformed chain reached the origin"


@pytest.mark.parametrize("host", ["img.test", "web.test"])
def test_undecodable_source_falls_back_to_original(stack, media, host):
    with open(media["bad.jpg"], "rb") as f:
        data = f.read()
    r = stack.get("/bad.jpg/dims/resize/100x100", host=host, timeout=30)
    assert r.status_code == 200
    assert sha256(r.content) == sha256(data)
    assert r.headers.get(FALLBACK), dict(r.headers)
    assert int(r.headers["Content-Length"]) == len(data)


@pytest.mark.parametrize("host,path", [
    ("small.test", "/photo.jpg/dims/resize/100x100"),             # http origin, Content-Length
    ("small.test", "/_chunked/photo.jpg/dims/resize/100x100"),    # http origin, chunked, no length
    ("smallfile.test", "/photo.jpg/dims/resize/100x100"),         # file origin
])
def test_source_over_max_source_size_sent_unprocessed(stack, photo, host, path):
    r = stack.get(path, host=host, timeout=30)
    assert r.status_code == 200
    assert len(r.content) == len(photo)
    assert sha256(r.content) == sha256(photo)
    assert r.headers.get(FALLBACK), dict(r.headers)
    assert r.headers["Content-Type"] == "image/jpeg"


def test_small_vhost_still_transforms_small_sources(stack, tmp_path):
    _, info = _img(stack, "/alpha.png/dims/resize/60x60", tmp_path, host="small.test")
    assert (info["width"], info["height"]) == (60, 40)


def test_source_404_passes_through(stack):
    r = stack.get("/nope.jpg/dims/resize/100x100", host="web.test")
    assert r.status_code == 404
    assert r.text == "not found at the origin\n"
    r = stack.get("/nope.jpg/dims/resize/100x100", host="img.test")
    assert r.status_code == 404
    assert one_line(r.text)


@pytest.mark.parametrize("host", ["img.test", "web.test"])
def test_head_on_image_url(stack, host):
    g = stack.get("/photo.jpg/dims/resize/200x200", host=host)
    assert g.status_code == 200
    h = stack.request("HEAD", "/photo.jpg/dims/resize/200x200", host=host)
    assert h.status_code == 200
    assert h.content == b""
    assert h.headers["Content-Type"] == "image/jpeg"
    assert int(h.headers["Content-Length"]) == len(g.content)


def test_transformed_image_keeps_freshness_and_has_its_own_etag(stack, origin):
    """A result keeps the source's freshness, not its identity: its ETag is
    a hash of its own bytes, so a client (or a CDN) revalidates it, hit or
    miss, and gets 304; the same chain of the same source validates alike."""
    plain = stack.get("/photo.jpg", host="web.test")
    r = stack.get("/photo.jpg/dims/resize/100x100", host="web.test")
    assert r.status_code == 200
    assert r.headers.get("Last-Modified") == plain.headers["Last-Modified"]
    etag = r.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{16}"', etag) and etag != plain.headers.get("ETag"), etag
    for _ in range(2):
        nm = stack.get("/photo.jpg/dims/resize/100x100", host="web.test", headers={"If-None-Match": etag})
        assert nm.status_code == 304 and nm.content == b"", dict(nm.headers)
    other = stack.get("/photo.jpg/dims/resize/120x120", host="web.test", headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.headers["ETag"] != etag
    part = stack.get("/photo.jpg/dims/resize/100x100", host="web.test", headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == r.content[:10]


def test_custom_keyword(stack, photo, tmp_path):
    _, info = _img(stack, "/photo.jpg/img/resize/100x100", tmp_path, host="kw.test")
    assert (info["width"], info["height"]) == (100, 67)
    # "dims" is a plain path segment on that vhost: there is no such file.
    r = stack.get("/photo.jpg/dims/resize/100x100", host="kw.test")
    assert r.status_code == 404
    assert stack.get("/photo.jpg", host="kw.test").content == photo


def test_dims_inactive_is_plain_proxy(stack, photo):
    r = stack.get("/photo.jpg/dims/resize/100x100", host="off.test")
    assert r.status_code == 404
    r = stack.get("/photo.jpg", host="off.test")
    assert r.status_code == 200 and r.content == photo


def test_image_post_is_405(stack):
    r = stack.request("POST", "/photo.jpg/dims/resize/100x100", data=b"x")
    assert r.status_code == 405


@pytest.mark.parametrize("raw_path", [
    "/../secret.txt/dims/resize/10x10",
    "/%2e%2e/secret.txt/dims/resize/10x10",
    "/x/../../secret.txt/dims/resize/10x10",
])
def test_source_path_cannot_escape_file_origin(stack, media, raw_path):
    secret = os.path.join(os.path.dirname(media["dir"]), "secret.txt")
    with open(secret, "w") as f:
        f.write("TOP-SECRET-BYTES\n")
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as s:
        s.sendall(f"GET {raw_path} HTTP/1.1\r\nHost: img.test\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            raw += b
    assert b"TOP-SECRET" not in raw, raw[:300]
    assert raw.split(b"\r\n", 1)[0].split()[1] in (b"400", b"403", b"404"), raw[:300]


def test_no_worker_is_503_with_retry_after(make_stack, media):
    st = make_stack([{"name": "img.test", "default": True, "origin": "file://" + media["dir"]}], workers=0)
    t0 = time.monotonic()
    r = st.get("/photo.jpg/dims/resize/100x100")
    assert r.status_code == 503
    assert r.headers.get("Retry-After", "").isdigit(), dict(r.headers)
    assert one_line(r.text), repr(r.text)
    assert time.monotonic() - t0 < 2
    # plain requests are unaffected
    assert st.get("/hello.txt").status_code == 200



# ---- more of docs/image.md -----------------------------------------------------

def _raw_head(st, path, host):
    with socket.create_connection(("127.0.0.1", st.port), timeout=20) as s:
        s.sendall(f"HEAD {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            raw += b
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return int(lines[0].split()[1]), headers, body


# The header value for oversized sources changed from the docs' "source
# larger than max_source_size" to the metric's token "over_max_source_size"
# (commit be471d1); either is accepted until the docs and code agree.
OVERSIZE = ("over_max_source_size", "source larger than max_source_size")


@pytest.mark.parametrize("host,path,label", [
    ("img.test", "/bad.jpg/dims/resize/100x100", "source_not_decodable"),
    ("web.test", "/bad.jpg/dims/resize/100x100", "source_not_decodable"),
    ("small.test", "/photo.jpg/dims/resize/100x100", "over_max_source_size"),
    ("small.test", "/_chunked/photo.jpg/dims/resize/100x100", "over_max_source_size"),
    ("smallfile.test", "/photo.jpg/dims/resize/100x100", "over_max_source_size"),
])
def test_fallback_reason_counter_and_log(stack, host, path, label):
    before = stack.metric("refract_image_fallbacks_total", vhost=host, reason=label) or 0
    r = stack.get(path, host=host, timeout=30)
    assert r.status_code == 200
    if label == "over_max_source_size":
        assert r.headers[FALLBACK] in OVERSIZE, r.headers[FALLBACK]
    else:
        assert r.headers[FALLBACK] == label
    rid = r.headers["X-Request-Id"]
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        after = stack.metric("refract_image_fallbacks_total", vhost=host, reason=label) or 0
        lines = [l for l in stack.gw.log().splitlines() if f"req={rid} GET" in l]
        if after == before + 1 and lines:
            break
        time.sleep(0.05)
    assert after == before + 1, f"refract_image_fallbacks_total{{vhost={host},reason={label}}}: {before} -> {after}"
    assert lines and "fallback=" in lines[0], lines




@pytest.mark.parametrize("host,path,size", [
    # file origin, source sent by reference (bus.file_refs, the default): the
    # fallback is served from the file, through the same path as oversized sources
    pytest.param("img.test", "/bad.jpg/dims/resize/100x100", "bad.jpg"),
    ("web.test", "/bad.jpg/dims/resize/100x100", "bad.jpg"),
    pytest.param("small.test", "/photo.jpg/dims/resize/100x100", "photo.jpg"),
    pytest.param("small.test", "/_chunked/photo.jpg/dims/resize/100x100", None),
    pytest.param("smallfile.test", "/photo.jpg/dims/resize/100x100", "photo.jpg"),
])
def test_head_on_fallbacks_sends_no_body(stack, media, host, path, size):
    status, headers, body = _raw_head(stack, path, host)
    assert status == 200
    assert headers.get("x-refract-fallback"), headers
    if size is not None:
        assert int(headers["content-length"]) == os.path.getsize(media[size]), headers
    assert body == b"", f"HEAD {path} on {host} carried {len(body)} body bytes"


@pytest.mark.parametrize("host,path,status", [
    pytest.param("web.test", "/nope.jpg/dims/resize/100x100", 404),
    ("img.test", "/nope.jpg/dims/resize/100x100", 404),
    ("web.test", "/photo.jpg/dims/resize/0x0", 400),
    ("img.test", "/photo.jpg/dims/quality/0", 400),
])
def test_head_on_image_errors_sends_no_body(stack, host, path, status):
    got, headers, body = _raw_head(stack, path, host)
    assert got == status
    assert body == b"", f"HEAD {path} on {host} ({status}) carried {body[:80]!r}"


@pytest.mark.parametrize("host,path,fallback", [
    ("exact.test", "/photo.jpg/dims/resize/100x100", False),
    ("exact.test", "/_chunked/photo.jpg/dims/resize/100x100", False),
    ("exactfile.test", "/photo.jpg/dims/resize/100x100", False),
    ("under.test", "/photo.jpg/dims/resize/100x100", True),
    ("under.test", "/_chunked/photo.jpg/dims/resize/100x100", True),
    ("underfile.test", "/photo.jpg/dims/resize/100x100", True),
])
def test_max_source_size_boundary(stack, photo, tmp_path, host, path, fallback):
    r = stack.get(path, host=host, timeout=30)
    assert r.status_code == 200
    if fallback:
        assert r.headers.get(FALLBACK) and r.content == photo
    else:
        assert FALLBACK not in r.headers, r.headers.get(FALLBACK)
        info = image_info(r.content, str(tmp_path))
        assert (info["width"], info["height"]) == (100, 67)


def test_chunked_source_is_transformed(stack, tmp_path):
    _, info = _img(stack, "/_chunked/photo.jpg/dims/resize/100x100", tmp_path, host="web.test")
    assert (info["width"], info["height"]) == (100, 67)


def test_source_fetch_drops_range_conditionals_and_query(stack, origin, tmp_path):
    rid = "img-source-fetch-check"
    r = stack.get("/photo.jpg/dims/resize/100x100?v=7", host="web.test",
                  headers={"X-Request-Id": rid, "Range": "bytes=0-99", "If-None-Match": '"x"',
                           "If-Modified-Since": "Thu, 01 Jan 2037 00:00:00 GMT", "X-Other": "kept"})
    # the client's Range and conditionals apply to the result, not to the source
    assert r.status_code == 206 and len(r.content) == 100, (r.status_code, dict(r.headers))
    whole, info = _img(stack, "/photo.jpg/dims/resize/100x100?v=7", tmp_path, host="web.test")
    assert (info["width"], info["height"]) == (100, 67)
    assert r.headers["Content-Range"] == f"bytes 0-99/{len(whole.content)}" and r.content == whole.content[:100]
    reqs = [q for q in origin.requests if q["headers"].get("x-request-id") == rid]
    assert len(reqs) == 1, reqs
    q = reqs[0]
    assert q["method"] == "GET" and q["path"] == "/photo.jpg", q
    lower = {k.lower() for k in q["headers"]}
    assert not lower & {"range", "if-none-match", "if-modified-since"}, q["headers"]


def test_request_id_reaches_the_worker_log(stack):
    rid = "trace-me-through-the-bus-42"
    r = stack.get("/photo.jpg/dims/resize/77x77", headers={"X-Request-Id": rid})
    assert r.status_code == 200 and r.headers["X-Request-Id"] == rid
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and f"req={rid} " not in stack.workers[0].log():
        time.sleep(0.05)
    wl = [l for l in stack.workers[0].log().splitlines() if f"req={rid} " in l]
    assert wl and "resize/77x77" in wl[0] and " 200 " in wl[0], wl


@pytest.mark.parametrize("chain,expect", [
    ("resize/1200x1200", (600, 400, "pngload")),       # never enlarged without < or !
    ("resize/1200x1200<", (1200, 800, "pngload")),     # enlarged to fit inside
    ("resize/1200x1200!", (1200, 1200, "pngload")),    # exactly, aspect ignored
    ("resize/300x300^", (450, 300, "pngload")),        # covers the box
    ("resize/0300x", (300, 200, "pngload")),           # leading zeros
    ("format/png/format/webp", (600, 400, "webpload")),  # the last format wins
    ("format/webp/resize/150", (150, 100, "webpload")),
])
def test_chain_semantics(stack, tmp_path, chain, expect):
    _, info = _img(stack, f"/alpha.png/dims/{chain}", tmp_path)
    assert (info["width"], info["height"], info["loader"]) == expect


def test_keyword_at_path_start_is_a_plain_path(stack):
    r = stack.get("/dims/resize/100")
    assert r.status_code == 404
    assert not r.text.startswith("bad dims chain")


def test_bad_chain_names_the_vhost_keyword(stack):
    r = stack.get("/photo.jpg/img/resize/0x0", host="kw.test")
    assert r.status_code == 400
    assert r.text.startswith("bad img chain: "), r.text


def test_http2_image_request(stack, tmp_path):
    out = tmp_path / "h2.jpg"
    r = harness.curl(["--http2-prior-knowledge", "-H", "Host: web.test", "-o", str(out), "-w",
                      "%{http_version} %{http_code} %{content_type}", stack.url("/photo.jpg/dims/resize/300x300")])
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == "2 200 image/jpeg"
    info = image_info(out.read_bytes(), str(tmp_path))
    assert (info["width"], info["height"]) == (300, 200)


def test_max_pixels(make_stack, media, photo, tmp_path):
    st = make_stack([{"name": "img.test", "default": True, "origin": "file://" + media["dir"]}],
                    image_worker={"max_pixels": 1000000, "max_output_pixels": 1000000})
    # 2400x1600 = 3.84 MP source: not decoded, the original is sent
    r = st.get("/photo.jpg/dims/resize/100x100")
    assert r.status_code == 200
    assert r.headers[FALLBACK] == "source_too_large"
    assert r.content == photo
    # 600x400 source, 2000x1333 result: refused by max_output_pixels
    r = st.get("/alpha.png/dims/resize/2000x2000<")
    assert r.status_code == 400
    assert one_line(r.text) and "over the budget 1000000" in r.text, r.text
    # the same box without < does not enlarge: nothing to refuse
    r = st.get("/alpha.png/dims/resize/2000x2000")
    assert r.status_code == 200
    assert image_info(r.content, str(tmp_path))["width"] == 600
    # within the budget: fine
    r = st.get("/alpha.png/dims/resize/1000x1000<")
    assert r.status_code == 200
    assert image_info(r.content, str(tmp_path))["width"] == 1000


@pytest.mark.timeout_s(40)
def test_image_source_origin_failures(make_stack, origin):
    closed = harness.free_port()
    st = make_stack([
        {"name": "web.test", "default": True, "origin": origin.url},
        {"name": "down.test", "origin": f"http://127.0.0.1:{closed}"},
    ], gateway={"origin": {"read_timeout": "1s"}})
    cases = [
        ("down.test", "/photo.jpg/dims/resize/100x100", 502),   # unreachable
        ("web.test", "/_delay/dims/resize/100x100", 504),       # head later than read_timeout
        ("web.test", "/_cut/dims/resize/100x100", 502),         # closed mid-body while collecting
        ("web.test", "/_stall/dims/resize/100x100", 504),       # silent mid-body while collecting
        ("web.test", "/_garbage/dims/resize/100x100", 502),     # not HTTP
    ]
    for host, path, status in cases:
        t0 = time.monotonic()
        r = st.get(path, host=host, timeout=20)
        took = time.monotonic() - t0
        assert r.status_code == status, (host, path, r.status_code, r.text)
        assert one_line(r.text), (path, r.text)
        assert FALLBACK not in r.headers
        assert took < 4, (path, took)
    # a redirect for the source is passed through as the origin sent it
    r = st.get("/_status/302/dims/resize/100x100", host="web.test")
    assert r.status_code == 302 and r.text == "origin says 302\n"
    # and the gateway still transforms afterwards
    assert st.get("/photo.jpg/dims/resize/100x100", host="web.test").status_code == 200



def test_file_sources_copied_over_the_bus(make_stack, media, tmp_path):
    """bus.file_refs: false sends file:// sources as body frames, like http ones."""
    st = make_stack([{"name": "img.test", "default": True, "origin": "file://" + media["dir"]}],
                    bus={"file_refs": False})
    r = st.get("/photo.jpg/dims/resize/500x500")
    assert r.status_code == 200
    info = image_info(r.content, str(tmp_path))
    assert (info["width"], info["height"]) == (500, 333)
    with open(media["bad.jpg"], "rb") as f:
        bad = f.read()
    r = st.get("/bad.jpg/dims/resize/100x100")
    assert r.status_code == 200 and r.content == bad
    assert r.headers[FALLBACK] == "source_not_decodable"
    status, headers, body = _raw_head(st, "/bad.jpg/dims/resize/100x100", "img.test")
    assert status == 200 and body == b"" and int(headers["content-length"]) == len(bad)


def test_worker_serialises_liborc(stack, tmp_path):
    """Debian's liborc 0.4.33 frees compiled code without its lock, and
    concurrent jobs crashed the worker in its free list (img_orc.c). The
    worker's executable exports its serialising orc_program_compile and
    orc_program_free, so libvips's calls bind to them, and it did not warn
    at start that they are not in effect."""
    r = subprocess.run(["nm", "-D", "--defined-only", harness.WORKER_BIN], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in r.stdout.splitlines() if line.strip()}
    assert {"orc_program_compile", "orc_program_free"} <= exported, sorted(x for x in exported if "orc" in x)
    _img(stack, "/photo.jpg/dims/resize/200x", tmp_path)
    for w in stack.workers:
        assert "not serialised" not in w.log(), w.log()[-2000:]
