"""Shared metadata over a real redis-server (gateway.metadata.backend:
redis): a purge made on one gateway is applied by another within a second;
Redis killed mid-test never stops serving, purges made meanwhile go out
when it is back, and a gateway that was cut off revalidates everything."""
import os
import signal
import subprocess
import time
import urllib.parse

import pytest

import harness

TOKEN = "redis-test-token"


class Redis:
    def __init__(self, d, password=None):
        self.dir = d
        self.port = harness.free_port()
        self.password = password
        self.proc = None
        self.start()

    def start(self):
        auth = ["--requirepass", self.password] if self.password else []
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir] + auth, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cli = ["redis-cli", "-p", str(self.port)] + (["--no-auth-warning", "-a", self.password] if self.password else [])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = subprocess.run(cli + ["ping"], capture_output=True, text=True)
            if r.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.kill()


def _site(d):
    os.makedirs(d, exist_ok=True)
    day = time.time() - 86400
    for i in range(4):
        p = os.path.join(d, f"o{i}.txt")
        with open(p, "w") as f:
            f.write(f"object {i}\n")
        os.utime(p, (day, day))
    return d


def _purge(st, action, url):
    return harness.http("POST", st.admin(f"/{action}?url=" + urllib.parse.quote(url, safe="")),
                        headers={"Authorization": f"Bearer {TOKEN}"})


def _status(st, path):
    return st.get(path, host="r.test").headers.get("Cache-Status", "")


def _wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


@pytest.fixture
def pair(make_stack, tmp_path):
    rd = Redis(str(tmp_path))
    o = harness.Origin(_site(str(tmp_path / "site")))
    gw = {"admin_token": TOKEN, "metadata": {"backend": "redis", "redis": f"127.0.0.1:{rd.port}", "prefix": "t"}}
    a = make_stack([{"name": "r.test", "default": True, "origin": o.url}], workers=0, gateway=dict(gw, name="gw-a"))
    b = make_stack([{"name": "r.test", "default": True, "origin": o.url}], workers=0, gateway=dict(gw, name="gw-b"))
    for st in (a, b):
        _wait(lambda st=st: harness.metric_value(st.metrics(), "refract_metadata_redis_up") == 1, 10, "redis up")
    yield a, b, rd, o
    rd.close()
    o.close()


def test_purge_on_one_gateway_reaches_the_other(pair):
    a, b, rd, o = pair
    for st in (a, b):
        st.get("/o0.txt", host="r.test")
        assert "hit" in _status(st, "/o0.txt")
    t0 = time.monotonic()
    r = _purge(a, "hardpurge", "http://r.test/o0.txt")
    assert r.status_code == 200 and r.json()["results"][0]["objects"] == 1
    _wait(lambda: harness.metric_value(b.metrics(), "refract_cache_purges_received_total", action="hardpurge") == 1,
          1.0, "gateway b applied the purge")
    assert time.monotonic() - t0 < 1.0
    assert "fwd=miss" in _status(b, "/o0.txt")
    assert "fwd=miss" in _status(a, "/o0.txt")


def test_redis_down_keeps_serving_and_catches_up(pair):
    a, b, rd, o = pair
    for st in (a, b):
        for p in ("/o1.txt", "/o2.txt"):
            st.get(p, host="r.test")
    rd.kill()
    _wait(lambda: harness.metric_value(a.metrics(), "refract_metadata_redis_up") == 0, 5, "a sees redis down")
    # serving goes on, hits included
    assert "hit" in _status(a, "/o1.txt") and "hit" in _status(b, "/o1.txt")
    # a purge made meanwhile applies locally at once, and waits for Redis
    r = _purge(a, "hardpurge", "http://r.test/o1.txt")
    assert r.status_code == 200 and r.json()["results"][0]["objects"] == 1
    assert "fwd=miss" in _status(a, "/o1.txt")
    assert "hit" in _status(b, "/o1.txt")  # b cannot know yet
    rd.start()  # same port
    _wait(lambda: all(harness.metric_value(st.metrics(), "refract_metadata_redis_up") == 1 for st in (a, b)), 10,
          "both reconnected")
    # b was cut off: everything revalidates once; o1 is gone from b too
    _wait(lambda: "hit" not in _status(b, "/o1.txt"), 5, "b dropped o1")
    assert "fwd=stale" in _status(b, "/o2.txt")  # revalidated, not served blindly
    assert harness.metric_value(b.metrics(), "refract_metadata_redis_errors_total") >= 1


def test_embedded_is_the_default(make_stack, tmp_path):
    st = make_stack([{"name": "r.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0)
    assert harness.metric_value(st.metrics(), "refract_metadata_redis_up") in (None, 0)


def _advertised(make_stack, rd, origin, names, **metadata):
    """Gateways on `rd` that advertise themselves (they share objects)."""
    sts = []
    for name in names:
        st = make_stack([{"name": "r.test", "default": True, "origin": origin.url}], workers=0, start=False,
                        gateway={"name": name, "admin_token": TOKEN,
                                 "metadata": dict({"backend": "redis", "redis": f"127.0.0.1:{rd.port}",
                                                   "prefix": "c"}, **metadata)})
        st.config["gateway"]["metadata"]["advertise"] = f"http://127.0.0.1:{st.port}"
        st.write_config()
        st.start_gateway()
        sts.append(st)
    for st in sts:
        _wait(lambda st=st: harness.metric_value(st.metrics(), "refract_metadata_redis_up") == 1, 10, "redis up")
    return sts


def _origin_count(o, path):
    return sum(1 for q in o.requests if q["path"] == path)


def test_collapsing_across_gateways(make_stack, tmp_path):
    """With gateway.metadata.advertise, concurrent misses on two gateways
    make one origin request: the second gateway finds the key claimed in
    Redis and fetches it from the first, which is filling it."""
    import threading
    rd = Redis(str(tmp_path))
    o = harness.Origin(_site(str(tmp_path / "site")))
    try:
        sts = _advertised(make_stack, rd, o, ("ca", "cb"))
        path = "/_slow?size=200000&secs=1"
        out = []
        lock = threading.Lock()

        def get(st):
            r = st.get(path, host="r.test", timeout=20)
            with lock:
                out.append((r.status_code, r.content))

        ts = [threading.Thread(target=get, args=(sts[i % 2],)) for i in range(8)]
        for t in ts:
            t.start()
            time.sleep(0.02)
        for t in ts:
            t.join(30)
        assert len(out) == 8 and all(s == 200 for s, _ in out), [s for s, _ in out]
        assert len({c for _, c in out}) == 1 and len(out[0][1]) == 200000
        n = _origin_count(o, path)
        assert n == 1, f"{n} origin requests for one key on two gateways"
        # the second gateway's copy came from the first (a sibling request)
        logs = sts[0].gw.log() + sts[1].gw.log()
        assert "collapsed across gateways" in logs
    finally:
        rd.close()
        o.close()


def test_objects_are_shared_across_gateways(make_stack, tmp_path):
    """A key one gateway stored is fetched from it by the others, not from
    the origin; after a purge on any gateway, no gateway fetches a copy
    from one that may not have applied the purge yet (here: one that is
    stopped), and a gateway that holds a key but is down costs the asker a
    failed connect, not an error."""
    rd = Redis(str(tmp_path))
    site = _site(str(tmp_path / "site"))
    o = harness.Origin(site)
    a, b = _advertised(make_stack, rd, o, ("sa", "sb"))
    try:
        r = a.get("/o0.txt", host="r.test")
        assert r.status_code == 200 and "stored" in r.headers["Cache-Status"]
        key_entries = lambda: subprocess.run(["redis-cli", "-p", str(rd.port), "--scan", "--pattern", "c:obj:*"],
                                             capture_output=True, text=True).stdout.split()
        _wait(lambda: len(key_entries()) == 1, 5, "a entered the object in Redis")
        r = b.get("/o0.txt", host="r.test")
        assert r.status_code == 200 and r.text == "object 0\n"
        assert _origin_count(o, "/o0.txt") == 1, "b went to the origin for an object a holds"
        assert "shared across gateways" in b.gw.log() and "holds it" in b.gw.log()
        assert "hit" in _status(b, "/o0.txt")  # and b keeps its copy

        # A purge through b while a cannot hear it (stopped): b must not
        # fetch a's old copy (the purge moved the epoch past a's entry).
        with open(os.path.join(site, "o0.txt"), "w") as f:
            f.write("object 0 v2\n")
        day = time.time() - 86400  # a day old: fresh for a while (heuristic)
        os.utime(os.path.join(site, "o0.txt"), (day, day))
        a.gw.signal(signal.SIGSTOP)
        try:
            assert _purge(b, "hardpurge", "http://r.test/o0.txt").status_code == 200
            t0 = time.monotonic()
            r = b.get("/o0.txt", host="r.test", timeout=10)
            assert r.status_code == 200 and r.text == "object 0 v2\n"
            assert time.monotonic() - t0 < 2, "b waited for the stopped gateway"
            assert _origin_count(o, "/o0.txt") == 2
        finally:
            a.gw.signal(signal.SIGCONT)
        # b stored the new copy and entered itself: a, purged by now, takes it from b
        _wait(lambda: harness.metric_value(a.metrics(), "refract_cache_purges_received_total",
                                           action="hardpurge") == 1, 5, "a applied the purge")
        _wait(lambda: any(
            subprocess.run(["redis-cli", "-p", str(rd.port), "get", k], capture_output=True, text=True)
            .stdout.strip().endswith(f":{b.port}") for k in key_entries()), 5, "b entered o0")
        assert a.get("/o0.txt", host="r.test").text == "object 0 v2\n"
        assert _origin_count(o, "/o0.txt") == 2

        # A gateway that holds a key but is gone: the asker fills it itself.
        a.get("/o1.txt", host="r.test")
        _wait(lambda: len(key_entries()) == 2, 5, "a entered o1")
        a.gw.kill9()
        r = b.get("/o1.txt", host="r.test", timeout=10)
        assert r.status_code == 200 and r.text == "object 1\n"
        assert _origin_count(o, "/o1.txt") == 2
        # and b's copy takes the dead gateway's entry
        _wait(lambda: sum(
            subprocess.run(["redis-cli", "-p", str(rd.port), "get", k], capture_output=True, text=True)
            .stdout.strip().endswith(f":{b.port}") for k in key_entries()) == 2, 5, "b entered o1")
    finally:
        rd.close()
        o.close()


def test_redis_with_a_password(make_stack, tmp_path):
    rd = Redis(str(tmp_path), password="secret")
    try:
        meta = {"backend": "redis", "redis": f"127.0.0.1:{rd.port}", "password": "secret"}
        st = make_stack([{"name": "r.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                        gateway={"metadata": meta})
        _wait(lambda: harness.metric_value(st.metrics(), "refract_metadata_redis_up") == 1, 5, "redis up with AUTH")
        bad = make_stack([{"name": "r.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                         gateway={"metadata": dict(meta, password="wrong")})
        _wait(lambda: (harness.metric_value(bad.metrics(), "refract_metadata_redis_errors_total") or 0) >= 1, 5,
              "the refusal counted")
        assert harness.metric_value(bad.metrics(), "refract_metadata_redis_up") == 0
        assert "WRONGPASS" in bad.gw.log() or "invalid password" in bad.gw.log(), bad.gw.log()
    finally:
        rd.close()


def test_restarted_gateway_revalidates_what_it_may_have_missed(pair):
    a, b, rd, o = pair
    b.get("/o3.txt", host="r.test")
    assert "hit" in _status(b, "/o3.txt")
    b.gw.stop()
    _purge(a, "hardpurge", "http://r.test/o3.txt")  # b is not there to hear it
    b.start_gateway()
    _wait(lambda: harness.metric_value(b.metrics(), "refract_metadata_redis_up") == 1, 10, "b reconnected")
    assert "hit" not in _status(b, "/o3.txt")


def test_redis_that_wants_a_password_is_not_up(make_stack, tmp_path):
    rd = Redis(str(tmp_path), password="secret")
    try:
        st = make_stack([{"name": "r.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                        gateway={"metadata": {"backend": "redis", "redis": f"127.0.0.1:{rd.port}"}})
        _wait(lambda: (harness.metric_value(st.metrics(), "refract_metadata_redis_errors_total") or 0) >= 1, 5,
              "the refusal counted")
        assert harness.metric_value(st.metrics(), "refract_metadata_redis_up") == 0
        assert "refused" in st.gw.log()
    finally:
        rd.close()
