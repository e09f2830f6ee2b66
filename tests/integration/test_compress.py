"""Compression once per object (seed <Compression> + compression.txt):
gzip and brotli variants made on the first hit of an accepting client and
kept, byte-exact when decompressed, Vary: Accept-Encoding, never applied
twice, to images, to small bodies or where a rule says no."""
import gzip
import json
import os
import time

import brotli
import pytest

import harness

WEB = "web.test"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("compress-origin"))
    files = {
        "data.json": json.dumps([{"i": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(2000)]).encode(),
        "style.css": b"body { color: red; margin: 0 auto; }\n" * 1500,
        "tiny.txt": b"hi\n",
        "skip.css": b"p { padding: 1px; }\n" * 500,
        "big.txt": b"0123456789abcdef" * (200 * 1024),  # 3.2 MB: above source_size
    }
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    harness.subprocess.run(["vips", "black", os.path.join(d, "img.png"), "300", "300"], check=True, timeout=30)
    day = time.time() - 86400  # old files: the Last-Modified heuristic allows their TTL
    for name in os.listdir(d):
        os.utime(os.path.join(d, name), (day, day))
    return d


@pytest.fixture(scope="module")
def stack(tmp_path_factory, root):
    o = harness.Origin(root)
    st = harness.Stack(
        str(tmp_path_factory.mktemp("compress")),
        vhosts=[
            {"name": WEB, "default": True, "origin": o.url, "compression": {"status": "on"}},
            {"name": "br.test", "origin": o.url,
             "compression": {"status": "on", "method": "br", "level": 5,
                             "rules": ["/skip.css, no", "*.css", "*.json, gzip, 9"]}},
            {"name": "off.test", "origin": o.url},
        ],
        workers=0,
    )
    yield st, root
    st.close()
    o.close()


def _get(st, path, host=WEB, ae=None):
    h = {"Accept-Encoding": ae} if ae is not None else {"Accept-Encoding": "identity"}
    # requests would decode the body itself: read it raw
    r = st.get(path, host=host, headers=h, stream=True)
    r.raw_bytes = r.raw.read(decode_content=False)
    return r


def _orig(root, name):
    with open(os.path.join(root, name), "rb") as f:
        return f.read()


def test_gzip_variant_made_once_and_kept(stack):
    st, root = stack
    first = _get(st, "/data.json", ae="gzip, br")
    assert first.headers.get("Content-Encoding") is None  # the miss goes as it came
    assert "fwd=miss" in first.headers["Cache-Status"]
    # ... saying already that the answer varies (a shared cache downstream
    # must not give this identity copy to the next gzip client, nor keep it
    # as the only one)
    assert first.headers["Vary"].lower() == "accept-encoding"
    for _ in range(3):
        r = _get(st, "/data.json", ae="gzip, br")
        assert r.headers["Content-Encoding"] == "gzip", dict(r.headers)
        assert r.headers["Vary"].lower() == "accept-encoding"
        assert "hit" in r.headers["Cache-Status"]
        assert int(r.headers["Content-Length"]) == len(r.raw_bytes) < len(_orig(root, "data.json")) // 3
        assert gzip.decompress(r.raw_bytes) == _orig(root, "data.json")
        assert "ETag" not in r.headers  # other bytes, other identity
    # the variant is one object, made once: the same bytes each time
    a, b = _get(st, "/data.json", ae="gzip"), _get(st, "/data.json", ae="gzip")
    assert a.raw_bytes == b.raw_bytes


def test_identity_for_clients_that_do_not_accept(stack):
    st, root = stack
    _get(st, "/style.css")
    r = _get(st, "/style.css", ae="identity")
    assert r.headers.get("Content-Encoding") is None and r.raw_bytes == _orig(root, "style.css")
    assert r.headers["Vary"].lower() == "accept-encoding"
    r = _get(st, "/style.css", ae="deflate")
    assert r.headers.get("Content-Encoding") is None


def test_rules_method_level_and_no(stack):
    st, root = stack
    for p in ("/style.css", "/data.json", "/skip.css"):
        _get(st, p, host="br.test")
    r = _get(st, "/style.css", host="br.test", ae="gzip, br")
    assert r.headers["Content-Encoding"] == "br"
    assert brotli.decompress(r.raw_bytes) == _orig(root, "style.css")
    r = _get(st, "/data.json", host="br.test", ae="gzip, br")
    assert r.headers["Content-Encoding"] == "gzip"  # the rule's method
    assert gzip.decompress(r.raw_bytes) == _orig(root, "data.json")
    r = _get(st, "/skip.css", host="br.test", ae="gzip, br")
    assert r.headers.get("Content-Encoding") is None and r.raw_bytes == _orig(root, "skip.css")
    # with rules, only listed paths are compressed (data.txt-like types too)
    _get(st, "/big.txt", host="br.test")
    r = _get(st, "/big.txt", host="br.test", ae="gzip, br")
    assert r.headers.get("Content-Encoding") is None


@pytest.mark.parametrize("path", ["/img.png", "/tiny.txt", "/big.txt"])
def test_not_compressed(stack, path):
    st, root = stack
    _get(st, path)
    r = _get(st, path, ae="gzip, br")
    assert r.headers.get("Content-Encoding") is None, (path, dict(r.headers))
    assert r.raw_bytes == _orig(root, path.lstrip("/"))
    assert "Vary" not in r.headers, (path, dict(r.headers))


def test_off_by_default(stack):
    st, root = stack
    _get(st, "/data.json", host="off.test")
    r = _get(st, "/data.json", host="off.test", ae="gzip")
    assert r.headers.get("Content-Encoding") is None and "Vary" not in r.headers


def test_gzip_file_from_origin_is_not_recompressed(stack, tmp_path):
    st, root = stack
    data = gzip.compress(b"already compressed text\n" * 2000)
    with open(os.path.join(root, "pre.txt.gz"), "wb") as f:
        f.write(data)
    day = time.time() - 86400
    os.utime(os.path.join(root, "pre.txt.gz"), (day, day))
    _get(st, "/pre.txt.gz")
    r = _get(st, "/pre.txt.gz", ae="gzip")
    assert r.raw_bytes == data, "a gzip file must reach the client byte for byte"
