"""The cache's purge API on the admin port (docs/cache.md "Purge"): the
token, /purge (refetch whole; the old copy only as a fallback), /expire
(revalidate), /hardpurge (gone, file too), by URL or pattern, with a
URL's function variants and query policy, and across a restart."""
import json
import os
import subprocess
import time
import urllib.parse

import pytest

import harness
from harness import http, pattern_bytes

TOKEN = "t0ken-for-tests"
WEB = "web.test"


def ctl(name, **q):
    return f"/_ctl/{name}" + ("?" + urllib.parse.urlencode(q, doseq=True) if q else "")


def cache_status(r):
    return r.headers.get("Cache-Status", "")


def purge(st, action, urls=(), body=None, token=TOKEN):
    q = "&".join("url=" + urllib.parse.quote(u, safe="") for u in urls)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http("POST", st.admin(f"/{action}" + ("?" + q if q else "")), headers=headers, data=body)


def objects_of(r):
    return [x.get("objects") for x in r.json()["results"]]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("purge-origin"))
    subprocess.run(["vips", "black", os.path.join(d, "img.jpg"), "64", "48"], check=True, timeout=30)
    day = time.time() - 86400
    os.utime(os.path.join(d, "img.jpg"), (day, day))
    return d


@pytest.fixture(scope="module")
def origin(root):
    o = harness.ControlledOrigin(root)
    yield o
    o.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, origin, root):
    st = harness.Stack(
        str(tmp_path_factory.mktemp("purge")),
        vhosts=[
            {"name": WEB, "default": True, "origin": origin.url},
            {"name": "q.test", "origin": origin.url, "cache": {"query": ["v"]}},
            {"name": "img.test", "origin": "file://" + root},
        ],
        gateway={"admin_token": TOKEN},
        workers=1,
    )
    yield st
    st.close()


def test_token_is_required(stack, make_stack, origin):
    r = purge(stack, "purge", ["http://web.test/x"], token=None)
    assert r.status_code == 401 and r.headers.get("WWW-Authenticate") == "Bearer", r.text
    r = purge(stack, "purge", ["http://web.test/x"], token="wrong")
    assert r.status_code == 401, r.text
    r = http("GET", stack.admin("/purge?url=http://web.test/x"), headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 405
    r = purge(stack, "purge")
    assert r.status_code == 400 and "url" in r.text
    # without gateway.admin_token the endpoints are off
    st = make_stack([{"name": WEB, "default": True, "origin": origin.url}], workers=0)
    r = purge(st, "hardpurge", ["http://web.test/x"])
    assert r.status_code == 403 and "admin_token" in r.text


def test_hardpurge_removes_object_and_file(stack, origin):
    path = ctl("hp", cc="max-age=600", size=5000, seed=3)
    assert "stored" in cache_status(stack.get(path))
    assert "hit" in cache_status(stack.get(path))
    r = purge(stack, "hardpurge", [f"http://{WEB}{path}"])
    assert r.status_code == 200 and r.json()["action"] == "hardpurge" and objects_of(r) == [1], r.text
    r2 = stack.get(path)
    assert "fwd=miss" in cache_status(r2) and r2.content == pattern_bytes(5000, seed=3)
    assert origin.count(path) == 2
    # a second hardpurge of a gone object finds nothing
    purge(stack, "hardpurge", [f"http://{WEB}{path}"])
    assert objects_of(purge(stack, "hardpurge", [f"http://{WEB}{path}"])) == [0]


def test_expire_revalidates_with_304(stack, origin):
    path = ctl("exp", cc="max-age=600", etag='"e1"', cond=1, size=3000, seed=4)
    stack.get(path)
    r = purge(stack, "expire", [f"//{WEB}{path}"])
    assert objects_of(r) == [1], r.text
    r2 = stack.get(path)
    assert "fwd=stale; fwd-status=304" in cache_status(r2), cache_status(r2)
    assert r2.content == pattern_bytes(3000, seed=4)
    last = [q for q in origin.requests if q["path"] == path][-1]
    assert {k.lower(): v for k, v in last["headers"].items()}.get("if-none-match") == '"e1"'
    assert "hit" in cache_status(stack.get(path))


def test_purge_refetches_whole_and_keeps_a_fallback(stack, origin):
    path = ctl("pg", cc="max-age=600", etag='"p1"', cond=1, size=4000, seed=5)
    stack.get(path)
    assert objects_of(purge(stack, "purge", [f"http://{WEB}{path}"])) == [1]
    r = stack.get(path)
    assert "fwd=stale; fwd-status=200" in cache_status(r), cache_status(r)
    last = [q for q in origin.requests if q["path"] == path][-1]
    assert "if-none-match" not in {k.lower() for k in last["headers"]}, "a purged object is refetched whole"
    # purged again, then the origin fails: the purged copy answers
    purge(stack, "purge", [f"http://{WEB}{path}"])
    origin.override("pg", status=503)
    try:
        r = stack.get(path)
    finally:
        origin.override("pg")
    assert r.status_code == 200 and r.content == pattern_bytes(4000, seed=5)
    assert "detail=origin-error" in cache_status(r), cache_status(r)


def test_pattern_purges_matching_paths_only(stack, origin):
    a, b, other = ctl("pat-a", cc="max-age=600"), ctl("pat-b", cc="max-age=600"), ctl("nopat", cc="max-age=600")
    for p in (a, b, other):
        stack.get(p)
    r = purge(stack, "hardpurge", body=f"http://{WEB}/_ctl/pat-*\n")
    assert objects_of(r) == [2], r.text
    assert "fwd=miss" in cache_status(stack.get(a)) and "fwd=miss" in cache_status(stack.get(b))
    assert "hit" in cache_status(stack.get(other))


def test_several_urls_and_bad_ones_in_one_request(stack):
    p = ctl("multi", cc="max-age=600")
    stack.get(p)
    r = purge(stack, "hardpurge", body=f"http://{WEB}{p}\r\nnot-a-url\n//{WEB}\n")
    res = r.json()["results"]
    assert r.status_code == 200 and len(res) == 3
    assert res[0]["objects"] == 1 and res[0]["vhost"] == WEB
    assert "error" in res[1] and "error" in res[2]


def test_url_purges_its_function_variants(stack):
    for chain in ("resize/20x20", "resize/30x30"):
        r = stack.get(f"/img.jpg/dims/{chain}", host="img.test")
        assert r.status_code == 200 and "stored" in cache_status(r), cache_status(r)
        assert "hit" in cache_status(stack.get(f"/img.jpg/dims/{chain}", host="img.test"))
    r = purge(stack, "hardpurge", ["http://img.test/img.jpg"])
    assert objects_of(r) == [2], r.text
    assert "fwd=miss" in cache_status(stack.get("/img.jpg/dims/resize/20x20", host="img.test"))


def test_purge_follows_the_query_policy(stack):
    # q.test keys keep only ?v: a purge URL with other parameters names the same object
    p = "/_ctl/qp?cc=max-age%3D600&v=1"
    stack.get(p + "&junk=1", host="q.test")
    assert "hit" in cache_status(stack.get(p, host="q.test"))
    r = purge(stack, "hardpurge", [f"http://q.test{p}&other=2"])
    assert objects_of(r) == [1], r.text


def test_expired_stays_expired_after_restart(stack, origin):
    path = ctl("exp-restart", cc="max-age=600", etag='"r1"', cond=1, size=1000, seed=6)
    stack.get(path)
    purge(stack, "expire", [f"http://{WEB}{path}"])
    n = origin.count(path)
    stack.gw.stop()
    stack.start_gateway()
    r = stack.get(path)
    assert "fwd=stale" in cache_status(r), cache_status(r)
    assert origin.count(path) == n + 1
