"""The gateway's side of image chains: 400s that name the bad token,
format/auto negotiated from Accept (Vary: Accept, one cache entry per
choice), presets and byoriginal rule sets from the vhost's config (the
seed's limit-1200 example as written), and fallbacks to the original that
answer Range and conditional requests like a static server."""
import base64
import hashlib
import hmac
import os
import shutil
import subprocess
import threading
import time
import urllib.parse

import pytest

import harness
from harness import image_info, sha256

FALLBACK = "X-Refract-Fallback"

DIMS = {
    "presets": {"card": "thumbnail/300x200/format/webp", "slashed": "/resize/120x/"},
    "byoriginal": {"limit-1200": [{"width": 1200, "chain": "/optimize"}, {"chain": "/resize/1024x768/optimize"}]},
}


@pytest.fixture(scope="module")
def aged_origin(tmp_path_factory, media):
    """The media, a day old: the Last-Modified heuristic then lets results
    be cached (files written just now get TTL 0)."""
    d = str(tmp_path_factory.mktemp("aged"))
    day = time.time() - 86400
    for name in ("photo.jpg", "alpha.png"):
        shutil.copy(media[name], os.path.join(d, name))
        os.utime(os.path.join(d, name), (day, day))
    o = harness.Origin(d)
    yield o
    o.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, origin, media, aged_origin):
    files = "file://" + media["dir"]
    work = str(tmp_path_factory.mktemp("dims-gw"))
    st = harness.Stack(
        work,
        # http sources go to the worker through the spool (the other suites
        # send them over the bus): every web.test case below takes that path
        bus={"spool_dir": os.path.join(work, "spool")},
        vhosts=[
            {"name": "img.test", "default": True, "origin": files, "dims": DIMS},
            {"name": "web.test", "origin": origin.url, "dims": DIMS},
            {"name": "cached.test", "origin": aged_origin.url, "cache": {"enable": True}},
            {"name": "smallfile.test", "origin": files, "dims": {"max_source_size": "200KB"}},
            {"name": "smallweb.test", "origin": origin.url, "dims": {"max_source_size": "200KB"}},
            {"name": "signed.test", "origin": aged_origin.url, "cache": {"enable": True},
             "dims": {"signing": {"keys": {"old": SECRET_OLD, "new": SECRET_NEW}}}},
        ],
        vhost_defaults={"cache": {"enable": False}},
        workers=1,
        image_worker={"jobs": 2},
    )
    yield st
    st.close()


SECRET_OLD, SECRET_NEW = "old-secret-0123456789", "new-secret-9876543210"


def _sign(path, secret, keyid, expires, rest=""):
    """What docs/image.md tells users to compute."""
    msg = path + ("?" + rest if rest else "") + "\n" + str(expires)
    sig = base64.urlsafe_b64encode(hmac.new(secret.encode(), msg.encode(), hashlib.sha256).digest()).rstrip(b"=")
    q = (rest + "&" if rest else "") + f"expires={expires}&keyid={keyid}&sig={sig.decode()}"
    return path + "?" + q


def _get(st, path, host="img.test", **kw):
    return st.get(path, host=host, timeout=60, **kw)


@pytest.mark.parametrize("chain,why", [
    ("rotate/45", "bad dims chain: rotate: '45' is not 90, 180 or 270"),
    ("resize/500^", "bad dims chain: resize: '500^' is not WxH, W, Wx or xH (sides 1..16384), optionally ending in "
                    "^ ! > or <"),
    ("format/bmp", "bad dims chain: format: 'bmp' is not jpeg, jpg, png, webp, avif, gif or auto"),
    ("sepia", "bad dims chain: unknown operation 'sepia' (valid: resize, crop, thumbnail, gravity, rotate, flip, flop, "
              "format, quality, optimize, strip, sharpen, blur, grayscale, background, extend, preset, byoriginal, "
              "split)"),
    ("preset/nope", "bad dims chain: unknown preset 'nope'"),
    ("byoriginal/nope", "bad dims chain: unknown byoriginal rule set 'nope'"),
])
def test_bad_chain_is_400_naming_the_token(stack, origin, chain, why):
    before = origin.count("/photo.jpg") if hasattr(origin, "count") else len(origin.requests)
    r = _get(stack, f"/photo.jpg/dims/{chain}", host="web.test")
    assert r.status_code == 400
    assert r.text == why + "\n"
    after = origin.count("/photo.jpg") if hasattr(origin, "count") else len(origin.requests)
    assert after == before, "a bad chain reached the origin"


@pytest.mark.parametrize("accept,ctype,loader", [
    ("image/avif,image/webp,image/apng,image/*,*/*;q=0.8", "image/avif", "heifload"),
    ("image/webp,*/*", "image/webp", "webpload"),
    ("image/*,*/*;q=0.8", "image/jpeg", "jpegload"),
    (None, "image/jpeg", "jpegload"),
])
def test_format_auto_follows_accept(stack, tmp_path, accept, ctype, loader):
    headers = {"Accept": accept} if accept else {}
    r = _get(stack, "/photo.jpg/dims/resize/300x300/format/auto", headers=headers)
    assert r.status_code == 200, r.text[:200]
    assert r.headers["Content-Type"] == ctype
    assert r.headers["Vary"].lower() == "accept"
    info = image_info(r.content, str(tmp_path))
    assert info["loader"] == loader and (info["width"], info["height"]) == (300, 200)


def test_format_auto_is_one_cache_entry_per_choice(stack):
    path = "/photo.jpg/dims/resize/200x200/format/auto"
    webp = {"Accept": "image/webp"}
    r1 = _get(stack, path, host="cached.test", headers=webp)
    assert "fwd=miss" in r1.headers["Cache-Status"] and r1.headers["Content-Type"] == "image/webp"
    r2 = _get(stack, path, host="cached.test", headers=webp)
    assert "hit" in r2.headers["Cache-Status"] and r2.content == r1.content
    assert r2.headers["Vary"].lower() == "accept"
    r3 = _get(stack, path, host="cached.test")  # no Accept: the source's format, its own entry
    assert "fwd=miss" in r3.headers["Cache-Status"] and r3.headers["Content-Type"] == "image/jpeg"
    r4 = _get(stack, path, host="cached.test", headers={"Accept": "image/avif,image/webp"})
    assert "fwd=miss" in r4.headers["Cache-Status"] and r4.headers["Content-Type"] == "image/avif"
    assert "hit" in _get(stack, path, host="cached.test").headers["Cache-Status"]


def test_preset_is_inlined(stack, tmp_path):
    r = _get(stack, "/photo.jpg/dims/preset/card")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/webp"
    info = image_info(r.content, str(tmp_path))
    assert (info["width"], info["height"]) == (300, 200)
    r = _get(stack, "/photo.jpg/dims/preset/slashed/format/png")  # "/resize/120x/" as the seed writes chains
    info = image_info(r.content, str(tmp_path))
    assert (info["width"], info["height"], info["loader"]) == (120, 80, "pngload")


@pytest.mark.parametrize("host", ["img.test", "web.test"])
def test_byoriginal_seed_example(stack, tmp_path, media, host):
    """seed 002: <ByOriginal Name="limit-1200"><Condition Width="1200">/optimize
    </Condition><Condition>/resize/1024x768/optimize</Condition>: a 2400 px
    photo is resized into 1024x768; a 600 px image is only optimised."""
    r = _get(stack, "/photo.jpg/dims/byoriginal/limit-1200", host=host)
    assert r.status_code == 200, r.text[:200]
    info = image_info(r.content, str(tmp_path))
    assert (info["width"], info["height"], info["loader"]) == (1024, 683, "jpegload")
    r = _get(stack, "/alpha.png/dims/byoriginal/limit-1200", host=host)
    assert r.status_code == 200, r.text[:200]
    info = image_info(r.content, str(tmp_path))
    assert (info["width"], info["height"], info["loader"]) == (600, 400, "pngload")


@pytest.mark.parametrize("host,path", [
    ("img.test", "/bad.jpg/dims/resize/100x100"),          # undecodable, file origin
    ("web.test", "/bad.jpg/dims/resize/100x100"),          # undecodable, http origin
    ("smallfile.test", "/photo.jpg/dims/resize/100x100"),  # over max_source_size, file origin
    ("smallweb.test", "/photo.jpg/dims/resize/100x100"),   # over max_source_size, http origin (asked again)
])
def test_fallback_answers_range_and_conditionals(stack, media, host, path):
    src = media[path.split("/")[1]]
    with open(src, "rb") as f:
        whole = f.read()
    r = _get(stack, path, host=host)
    assert r.status_code == 200 and r.headers.get(FALLBACK), dict(r.headers)
    assert sha256(r.content) == sha256(whole)
    part = _get(stack, path, host=host, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206, dict(part.headers)
    assert part.content == whole[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
    tail = _get(stack, path, host=host, headers={"Range": f"bytes={len(whole) + 5}-"})
    assert tail.status_code == 416
    validator = r.headers.get("ETag")
    cond = {"If-None-Match": validator} if validator else {"If-Modified-Since": r.headers["Last-Modified"]}
    nm = _get(stack, path, host=host, headers=cond)
    assert nm.status_code == 304 and nm.content == b"", (cond, dict(r.headers))


def test_signed_urls(stack, aged_origin, tmp_path):
    origin = aged_origin
    path = "/photo.jpg/dims/resize/100x100"
    r = _get(stack, path, host="signed.test")
    assert r.status_code == 403 and r.text == "unsigned URL: expires, keyid and sig are required\n"
    later = int(time.time()) + 3600
    n0 = len(origin.requests)
    for secret, keyid in ((SECRET_OLD, "old"), (SECRET_NEW, "new")):  # rotation: both keys valid
        r = _get(stack, _sign(path, secret, keyid, later), host="signed.test")
        assert r.status_code == 200, r.text[:200]
        info = image_info(r.content, str(tmp_path))
        assert (info["width"], info["height"]) == (100, 67)
    # every signed copy of the URL is one cache entry; the origin never sees the signature
    assert "hit" in _get(stack, _sign(path, SECRET_NEW, "new", later + 1), host="signed.test").headers["Cache-Status"]
    seen = [q for q in origin.requests[n0:]]
    assert len(seen) == 1 and "sig=" not in seen[0]["path"] and "expires" not in seen[0]["path"], seen
    bad = _sign(path, SECRET_NEW, "new", later).replace("100x100", "101x100")
    r = _get(stack, bad, host="signed.test")
    assert r.status_code == 403 and r.text == "signature does not match\n"
    r = _get(stack, _sign(path, SECRET_NEW, "new", int(time.time()) - 10), host="signed.test")
    assert r.status_code == 403 and r.text.startswith("URL expired ")
    r = _get(stack, _sign(path, SECRET_NEW, "gone", later), host="signed.test")
    assert r.status_code == 403 and r.text == "unknown key id 'gone'\n"
    # other query parameters are signed too
    r = _get(stack, _sign(path, SECRET_NEW, "new", later, rest="v=2"), host="signed.test")
    assert r.status_code == 200
    r = _get(stack, _sign(path, SECRET_NEW, "new", later, rest="v=2").replace("v=2", "v=3"), host="signed.test")
    assert r.status_code == 403


# ---- external and named sources (seed Appendix C) ----------------------------------

@pytest.fixture(scope="module")
def ext(tmp_path_factory, media, origin):
    """A redirecting origin (ControlledOrigin /_ctl/ paths) and a stack
    whose vhosts take /dims/CHAIN/src/SOURCE URLs."""
    ctl = harness.ControlledOrigin(media["dir"])
    files = "file://" + media["dir"]
    st = harness.Stack(
        str(tmp_path_factory.mktemp("dims-src")),
        vhosts=[
            # every host allowed, but only at public addresses: loopback and the rest are refused
            {"name": "guarded.test", "default": True, "origin": files, "dims": {"sources": {"hosts": ["*"]}}},
            # the test origins (loopback) allowed on purpose
            {"name": "lab.test", "origin": files,
             "dims": {"sources": {"hosts": ["127.0.0.1:*"], "private": True,
                                  "named": {"nas01": origin.url, "ctl": ctl.url}}}},
            {"name": "nourl.test", "origin": files, "dims": {"sources": {"named": {"nas01": origin.url}}}},
        ],
        vhost_defaults={"cache": {"enable": False}},
        workers=1,
    )
    yield st, ctl
    st.close()
    ctl.close()


@pytest.mark.parametrize("source,kind", [
    ("http://127.0.0.1:{port}/photo.jpg", "127.0.0.1, a loopback"),
    ("http://[::1]:{port}/photo.jpg", "::1, a loopback"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, a link-local"),
    ("http://10.0.0.1/x.jpg", "10.0.0.1, a private"),
    ("http://192.168.1.1/x.jpg", "192.168.1.1, a private"),
    ("http://0.0.0.0:{port}/photo.jpg", "0.0.0.0, an unspecified"),
    ("http://[::ffff:127.0.0.1]:{port}/photo.jpg", "::ffff:127.0.0.1, a loopback"),  # IPv4-mapped
    ("http://[64:ff9b::a9fe:a9fe]/x", "64:ff9b::a9fe:a9fe, a link-local"),  # NAT64 of 169.254.169.254
    ("http://[2002:7f00:1::]/x", "2002:7f00:1::, a loopback"),  # 6to4 of 127.0.0.1
    ("http://203.0.113.7/x.jpg", "203.0.113.7, a documentation"),
    ("http://localhost:{port}/photo.jpg", "a loopback"),  # a name that resolves to loopback
])
def test_source_ssrf_refused(ext, origin, source, kind):
    st, _ = ext
    n0 = len(origin.requests)
    url = "/dims/resize/100/src/" + source.format(port=origin.port)
    r = st.get(url, host="guarded.test", timeout=30)
    assert r.status_code == 403, (r.status_code, r.text)
    assert r.text.startswith("source ") and "refused: it resolves to " in r.text and kind in r.text, r.text
    assert harness.one_line(r.text)
    assert len(origin.requests) == n0  # nothing reached it


def test_source_url_and_named(ext, origin, tmp_path):
    st, _ = ext
    r = st.get(f"/dims/resize/100/src/http://127.0.0.1:{origin.port}/photo.jpg", host="lab.test", timeout=30)
    assert r.status_code == 200, r.text[:200]
    info = image_info(r.content, str(tmp_path))
    assert (info["width"], info["height"]) == (100, 67)
    r = st.get("/dims/format/png/resize/60/src/nas01/alpha.png", host="lab.test", timeout=30)
    assert r.status_code == 200, r.text[:200]
    info = image_info(r.content, str(tmp_path))
    assert (info["width"], info["height"], info["loader"]) == (60, 40, "pngload")
    # the other form still works on the same vhost
    assert st.get("/photo.jpg/dims/resize/50", host="lab.test").status_code == 200


@pytest.mark.parametrize("host,url,status,text", [
    ("lab.test", "/dims/resize/100/src/http://example.com/a.jpg", 403,
     "dims source: host example.com is not in dims.sources.hosts"),
    ("lab.test", "/dims/resize/100/src/http://127.0.0.1/a.jpg", 403,
     "dims source: host 127.0.0.1 is not in dims.sources.hosts"),  # no port: the pattern wants one
    ("nourl.test", "/dims/resize/100/src/http://127.0.0.1:1/a.jpg", 403,
     "dims source: URL sources are off for this vhost (dims.sources.hosts)"),
    ("lab.test", "/dims/resize/100/src/nas02/a.jpg", 404, "dims source: no named source 'nas02' (dims.sources.named)"),
    ("lab.test", "/dims/resize/100/src/http://user@127.0.0.1:1/a.jpg", 400,
     "dims source: want http(s)://host[:port]/path"),
])
def test_source_refusals(ext, host, url, status, text):
    st, _ = ext
    r = st.get(url, host=host, timeout=30)
    assert (r.status_code, r.text) == (status, text + "\n")


def _redirect(ctl, name, to):
    return f"/_ctl/{name}?" + urllib.parse.urlencode({"status": 302, "hdr": f"Location: {to}"})


def test_source_redirects_followed_and_checked(ext, origin, tmp_path):
    st, ctl = ext
    final = f"http://127.0.0.1:{origin.port}/photo.jpg"
    # three hops are followed: ctl r1 -> r2 -> r3 -> the photo
    r3 = f"http://127.0.0.1:{ctl.port}" + _redirect(ctl, "r3", final)
    r2 = f"http://127.0.0.1:{ctl.port}" + _redirect(ctl, "r2", r3)
    r1 = _redirect(ctl, "r1", r2)
    r = st.get("/dims/resize/100/src/ctl" + r1, host="lab.test", timeout=30)
    assert r.status_code == 200, r.text[:300]
    assert image_info(r.content, str(tmp_path))["width"] == 100
    # a fourth is not
    r0 = _redirect(ctl, "r0", f"http://127.0.0.1:{ctl.port}" + r1)
    r = st.get("/dims/resize/100/src/ctl" + r0, host="lab.test", timeout=30)
    assert (r.status_code, r.text) == (502, "dims source: more than 3 redirects\n")
    # each hop is checked like the first URL: a host not allowed is refused
    away = _redirect(ctl, "away", "http://example.com/x.jpg")
    r = st.get("/dims/resize/100/src/ctl" + away, host="lab.test", timeout=30)
    assert (r.status_code, r.text) == (403, "dims source: host example.com is not in dims.sources.hosts\n")


def _square_origin(tmp_path):
    """An origin of one black 300x300 /photo.jpg, a day old (so cacheable)."""
    d = tmp_path / "other"
    d.mkdir()
    harness.subprocess.run(["vips", "black", str(d / "photo.jpg"), "300", "300"], check=True, timeout=30)
    day = time.time() - 86400
    os.utime(d / "photo.jpg", (day, day))
    return harness.Origin(str(d))


def test_source_results_never_answer_for_local_ones(make_stack, aged_origin, tmp_path):
    """A /src/ source's results are keyed by where the source comes from:
    an external /photo.jpg must not answer for the vhost's own /photo.jpg
    (nor the other way round)."""
    other = _square_origin(tmp_path)
    try:
        st = make_stack([{"name": "c.test", "default": True, "origin": aged_origin.url, "cache": {"enable": True},
                          "dims": {"sources": {"named": {"ext": other.url}}}}], workers=1)
        r = st.get("/dims/resize/100/src/ext/photo.jpg", timeout=30)
        assert r.status_code == 200 and "stored" in r.headers["Cache-Status"], r.headers.get("Cache-Status")
        assert image_info(r.content, str(tmp_path))["height"] == 100  # the square one
        r = st.get("/photo.jpg/dims/resize/100", timeout=30)
        assert "hit" not in r.headers["Cache-Status"], r.headers["Cache-Status"]
        assert image_info(r.content, str(tmp_path))["height"] == 67  # the vhost's own photo
        r = st.get("/dims/resize/100/src/ext/photo.jpg", timeout=30)
        assert "hit" in r.headers["Cache-Status"] and image_info(r.content, str(tmp_path))["height"] == 100
    finally:
        other.close()


def test_source_results_purged_by_source(make_stack, aged_origin, tmp_path):
    """The purge API names a /src/ source's results as /src/SOURCE on the
    vhost: a named source's, a URL source's (exact or a pattern); the
    vhost's own results of the same path stay."""
    other = _square_origin(tmp_path)
    tok = {"Authorization": "Bearer t0k"}

    def purge(action, url):
        r = harness.http("POST", st.admin(f"/{action}?url=" + urllib.parse.quote(url, safe="")), headers=tok)
        assert r.status_code == 200, r.text
        return r.json()["results"][0]["objects"]

    try:
        st = make_stack([{"name": "c.test", "default": True, "origin": aged_origin.url, "cache": {"enable": True},
                          "dims": {"sources": {"named": {"ext": other.url}, "hosts": ["localhost:*"],
                                               "private": True}}}], workers=1, gateway={"admin_token": "t0k"})
        named, own = "/dims/resize/100/src/ext/photo.jpg", "/photo.jpg/dims/resize/100"
        # (by name, not as 127.0.0.1: the key would then be the named source's, one source)
        by_url = f"/dims/resize/50/src/http://localhost:{other.port}/photo.jpg"
        for u in (named, own, by_url, named, own, by_url):
            assert st.get(u, timeout=30).status_code == 200
        assert all("hit" in st.get(u).headers["Cache-Status"] for u in (named, own, by_url))
        assert purge("purge", "http://c.test/src/ext/photo.jpg") == 1
        assert "hit" not in st.get(named, timeout=30).headers["Cache-Status"]
        assert "hit" in st.get(own).headers["Cache-Status"]  # the vhost's own photo is another object
        assert "hit" in st.get(by_url).headers["Cache-Status"]
        assert purge("hardpurge", f"http://c.test/src/http://LOCALHOST:{other.port}/*") == 1
        assert "hit" not in st.get(by_url, timeout=30).headers["Cache-Status"]
        assert purge("purge", "http://c.test/src/nas09/photo.jpg") == 0  # no such source: nothing, no error
    finally:
        other.close()


def _spooled(st):
    d = st.config["bus"]["spool_dir"]
    return sorted(os.listdir(d)) if os.path.isdir(d) else None


def _settled(listing, want, timeout=5):
    """listing() once it equals want: a source whose job came back is gone
    before its answer, one whose fetch failed when its request is freed,
    a moment after the client has its answer."""
    deadline = time.monotonic() + timeout
    got = listing()
    while got != want and time.monotonic() < deadline:
        time.sleep(0.02)
        got = listing()
    return got


def test_spool_files_last_as_long_as_their_request(stack, media, tmp_path):
    """A spooled source is mapped by the worker and removed with its
    request, whether it was transformed or sent back as the original."""
    assert _spooled(stack) == []
    r = _get(stack, "/photo.jpg/dims/resize/200x200", host="web.test")
    assert r.status_code == 200 and not r.headers.get(FALLBACK), dict(r.headers)
    info = image_info(r.content, str(tmp_path))
    assert max(info["width"], info["height"]) == 200
    bad = _get(stack, "/bad.jpg/dims/resize/100x100", host="web.test")
    assert bad.status_code == 200 and bad.headers.get(FALLBACK)
    with open(media["bad.jpg"], "rb") as f:
        assert bad.content == f.read()
    assert _spooled(stack) == []


def test_spool_dir_swept_at_start_and_checked(make_stack, origin, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    host = os.uname().nodename.replace("-", "_").replace("/", "_")
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    stale = spool / f"src-{host}-{dead.pid}-abcdef"
    live = spool / f"src-{host}-1-abcdef"          # pid 1 runs: another gateway's
    other = spool / f"src-otherhost-{dead.pid}-abcdef"  # another host's: not ours to judge
    for p in (stale, live, other):
        p.write_bytes(b"x")
    st = make_stack([{"name": "web.test", "default": True, "origin": origin.url}],
                    bus={"spool_dir": str(spool)}, vhost_defaults={"cache": {"enable": False}})
    assert not stale.exists()
    assert live.exists() and other.exists()
    r = st.get("/photo.jpg/dims/resize/64x64", host="web.test", timeout=60)
    assert r.status_code == 200 and not r.headers.get(FALLBACK)
    assert sorted(os.listdir(spool)) == sorted([live.name, other.name])
    st.close()


def test_spool_is_written_as_the_source_arrives(make_stack, media, tmp_path):
    """The source goes to the spool file piece by piece (the gateway holds
    no whole copy); a source cut mid-way leaves nothing behind."""
    spool = tmp_path / "spool"
    ctl = harness.ControlledOrigin(media["dir"])
    try:
        st = make_stack([{"name": "web.test", "default": True, "origin": ctl.url}],
                        bus={"spool_dir": str(spool)}, vhost_defaults={"cache": {"enable": False}})
        size, first = 300000, 100000
        out = {}
        # (a source's query is not sent to the origin: the parameters go by override)
        ctl.override("a", size=size, split=first, gate="g")
        ctl.override("b", size=size, split=first, pause=0.2, cut=1)
        t = threading.Thread(target=lambda: out.update(
            r=st.get("/_ctl/a/dims/resize/50x50", host="web.test", timeout=60)))
        t.start()
        deadline = time.monotonic() + 10
        sizes = []
        while time.monotonic() < deadline:
            sizes = [os.path.getsize(spool / n) for n in os.listdir(spool)]
            if sizes == [first]:
                break
            time.sleep(0.05)
        assert sizes == [first], "the first piece is not in one spool file"
        ctl.release("g")
        t.join(30)
        r = out["r"]
        # pattern bytes are no image: the original comes back, whole
        assert r.status_code == 200 and r.headers.get(FALLBACK), dict(r.headers)
        assert r.content == harness.pattern_bytes(size)
        assert os.listdir(spool) == []
        cut = st.get("/_ctl/b/dims/resize/50x50", host="web.test", timeout=60)
        assert cut.status_code == 502, (cut.status_code, cut.text)
        assert _settled(lambda: os.listdir(spool), []) == []
    finally:
        ctl.close()


def test_spool_dir_must_be_a_directory(make_stack, origin, tmp_path):
    """A spool path that is not a directory stops the gateway at start."""
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    bad = make_stack([{"name": "web.test", "default": True, "origin": origin.url}],
                     bus={"spool_dir": str(blocker)}, workers=0, start=False)
    gw = bad.start_gateway(wait=False)
    gw.expected_exit = True
    assert gw.popen.wait(10) != 0
    assert f"bus.spool_dir {blocker}: not a writable directory" in gw.log()
