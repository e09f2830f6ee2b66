"""Function sources through the edge cache (`cache.sources`, issue 7:
"a cached source can travel to the worker as a file reference"): the
source of /photo.jpg/dims/... on an http origin is fetched once into the
cache, as a plain GET of /photo.jpg would be, and every resize of it reaches
the worker as a reference into the cache file (source.offset), with no
second download; concurrent first requests collapse onto one fetch; an
undecodable source falls back to the original from its cache object (Range
works); a source file gone from the cache (evicted) is fetched again."""
import concurrent.futures
import os
import shutil

import harness
from harness import image_info


def _stack(make_stack, origin, **cache):
    c = {"enable": True, "sources": True, "override_origin": True, "ttl": {"res2xx": "1h"}}
    c.update(cache)
    return make_stack([{"name": "s.test", "default": True, "origin": origin.url, "cache": c}], workers=1)


def _fetches(origin, path):
    return sum(1 for r in origin.requests if r["path"] == path and r["method"] == "GET")


def test_one_download_for_many_sizes(make_stack, tmp_path, media):
    """Five sizes of one photo: one origin GET of the photo; each result is
    the right size; a plain GET of the photo is then a cache hit, byte-exact."""
    origin = harness.Origin(media["dir"])
    try:
        st = _stack(make_stack, origin)
        for w in (100, 150, 200, 250, 300):
            r = st.get(f"/photo.jpg/dims/resize/{w}x", host="s.test")
            assert r.status_code == 200, r.text
            assert image_info(r.content, str(tmp_path))["width"] == w
            assert "stored" in r.headers["Cache-Status"], r.headers["Cache-Status"]
        assert _fetches(origin, "/photo.jpg") == 1
        r = st.get("/photo.jpg", host="s.test")
        assert r.headers["Cache-Status"].startswith("refract; hit"), r.headers["Cache-Status"]
        assert r.content == open(media["photo.jpg"], "rb").read()
    finally:
        origin.close()


def test_concurrent_first_requests_collapse(make_stack, tmp_path, media):
    """Eight different sizes at once, none cached: one origin GET."""
    origin = harness.Origin(media["dir"])
    try:
        st = _stack(make_stack, origin)
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            rs = list(ex.map(lambda w: st.get(f"/alpha.png/dims/resize/{w}x", host="s.test"), range(40, 120, 10)))
        assert [r.status_code for r in rs] == [200] * 8
        assert [image_info(r.content, str(tmp_path))["width"] for r in rs] == list(range(40, 120, 10))
        assert _fetches(origin, "/alpha.png") == 1
    finally:
        origin.close()


def test_undecodable_source_falls_back_from_the_cache(make_stack, media):
    """The original of an undecodable source comes from its cache object,
    marked as a fallback, with Range answered; still one download."""
    origin = harness.Origin(media["dir"])
    try:
        st = _stack(make_stack, origin)
        bad = open(media["bad.jpg"], "rb").read()
        r = st.get("/bad.jpg/dims/resize/100x100", host="s.test")
        assert r.status_code == 200 and r.content == bad
        assert r.headers.get("X-Refract-Fallback"), r.headers
        r = st.get("/bad.jpg/dims/resize/90x90", host="s.test", headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == bad[10:20], (r.status_code, r.headers)
        assert _fetches(origin, "/bad.jpg") == 1
    finally:
        origin.close()


def test_source_gone_from_the_cache_is_fetched_again(make_stack, tmp_path, media):
    """The cache files removed behind the gateway's back (as eviction would
    between the lookup and the worker's open): the worker cannot open the
    reference, and the gateway fetches the source the usual way."""
    origin = harness.Origin(media["dir"])
    try:
        st = _stack(make_stack, origin)
        assert st.get("/photo.jpg/dims/resize/120x", host="s.test").status_code == 200
        objects = os.path.join(st.dir, "cache", "objects")
        assert os.path.isdir(objects), os.listdir(os.path.join(st.dir, "cache"))
        shutil.rmtree(objects)
        os.makedirs(objects)
        r = st.get("/photo.jpg/dims/resize/130x", host="s.test")
        assert r.status_code == 200, r.text
        assert image_info(r.content, str(tmp_path))["width"] == 130
        assert _fetches(origin, "/photo.jpg") == 2
        assert "source from the cache: source ref" in st.gw.log()
    finally:
        origin.close()


def test_errors_and_limits_go_the_usual_way(make_stack, media):
    """A missing source is the origin's 404; a source over max_source_size
    is the original, as without cache.sources."""
    origin = harness.Origin(media["dir"])
    try:
        st = make_stack([{"name": "s.test", "default": True, "origin": origin.url,
                          "cache": {"enable": True, "sources": True}, "dims": {"max_source_size": "100KB"}}],
                        workers=1)
        assert st.get("/nope.jpg/dims/resize/100x", host="s.test").status_code == 404
        r = st.get("/photo.jpg/dims/resize/100x", host="s.test")
        assert r.status_code == 200 and r.headers.get("X-Refract-Fallback") == "over_max_source_size"
        assert r.content == open(media["photo.jpg"], "rb").read()
    finally:
        origin.close()
