"""Virtual hosts: Host routing (exact, alias, wildcards, port, default),
no-default 404, and SIGHUP reloads."""
import os
import signal
import socket
import threading
import time

import pytest

import harness
from harness import one_line, pattern_bytes


def _site(root, name):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "who.txt"), "w") as f:
        f.write(name + "\n")
    return d


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sites"))
    return {n: _site(root, n) for n in ("A", "B", "C", "D", "one", "two")}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, sites):
    st = harness.Stack(
        str(tmp_path_factory.mktemp("vhosts")),
        vhosts=[
            {"name": "a.test", "aliases": ["alias-a.test", "other-a.test"], "origin": "file://" + sites["A"]},
            {"name": "*.example.test", "origin": "file://" + sites["B"]},
            # listed after the shorter wildcard: the longest match must win anyway
            {"name": "c.test", "aliases": ["*.deep.example.test"], "origin": "file://" + sites["C"]},
            {"name": "fallback.test", "default": True, "origin": "file://" + sites["D"]},
        ],
        workers=0,
    )
    yield st
    st.close()


@pytest.mark.parametrize("host,who", [
    ("a.test", "A"),
    ("A.Test", "A"),
    ("a.test.", "A"),
    ("alias-a.test", "A"),
    ("other-a.test", "A"),
    ("x.example.test", "B"),
    ("y.x.example.test", "B"),
    ("x.deep.example.test", "C"),
    ("c.test", "C"),
    ("a.test:8080", "A"),
    ("x.deep.example.test:1234", "C"),
    ("x.example.test:80", "B"),
    ("example.test", "D"),  # "*.example.test" needs a label before the suffix
    ("deep.example.test", "B"),
    ("nobody.test", "D"),
    ("127.0.0.1", "D"),
])
def test_host_routing(stack, host, who):
    r = stack.get("/who.txt", host=host)
    assert r.status_code == 200
    assert r.text == who + "\n", f"Host {host!r} served by {r.text.strip()!r}, expected {who!r}"


def test_http10_without_host_goes_to_default(stack):
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as s:
        s.sendall(b"GET /who.txt HTTP/1.0\r\n\r\n")
        raw = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            raw += b
    assert raw.startswith(b"HTTP/1.")
    assert b" 200 " in raw.split(b"\r\n", 1)[0], raw[:200]
    assert raw.endswith(b"\r\n\r\nD\n"), raw[-200:]


def test_no_default_vhost_is_404_with_reason(make_stack, sites):
    st = make_stack([{"name": "only.test", "origin": "file://" + sites["A"]}], workers=0)
    assert st.get("/who.txt", host="only.test").text == "A\n"
    r = st.get("/who.txt", host="stranger.test")
    assert r.status_code == 404
    assert one_line(r.text), repr(r.text)
    assert "stranger.test" in r.text
    assert st.get("/who.txt", host="only.test").status_code == 200


def _wait_for(fn, timeout=5, interval=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    return last


@pytest.mark.timeout_s(60)
def test_sighup_reload_switches_origin_and_keeps_inflight(make_stack, tmp_path, sites):
    o1, o2 = harness.Origin(sites["one"]), harness.Origin(sites["two"])
    try:
        st = make_stack([
            {"name": "web.test", "default": True, "origin": o1.url},
            {"name": "a.test", "origin": "file://" + sites["A"]},
        ], workers=0)
        assert st.get("/who.txt").text == "one\n"
        size = 2_000_000
        result = {}

        def download():
            try:
                with harness.session() as s:
                    r = s.get(st.url(f"/_slow?size={size}&secs=3"), headers={"Host": "web.test"}, timeout=30)
                    result["status"], result["body"] = r.status_code, r.content
            except Exception as e:  # reported by the main thread
                result["error"] = e
            result["done"] = time.monotonic()

        t = threading.Thread(target=download, daemon=True)
        t.start()
        time.sleep(0.7)
        st.config["vhosts"] = [
            {"name": "web.test", "default": True, "origin": o2.url},
            {"name": "a.test", "origin": "file://" + sites["A"]},
            {"name": "new.test", "origin": "file://" + sites["B"]},
        ]
        st.write_config()
        reload_at = time.monotonic()
        st.gw.signal(signal.SIGHUP)
        assert _wait_for(lambda: st.get("/who.txt").text == "two\n", 3), "requests still go to the old origin"
        switched = time.monotonic()
        assert "done" not in result, "the long download finished before the reload; it proves nothing"
        assert st.get("/who.txt", host="new.test").text == "B\n"
        assert st.get("/who.txt", host="a.test").text == "A\n"
        t.join(20)
        assert not t.is_alive()
        assert "error" not in result, result.get("error")
        assert result["status"] == 200
        assert len(result["body"]) == size
        assert result["body"] == pattern_bytes(size), "the download that spanned the reload was corrupted"
        assert result["done"] > reload_at
        assert switched - reload_at < 3
        assert "reloaded" in st.gw.log()
        # the old origin served the long download; the new one /who.txt
        assert any(r["path"].startswith("/_slow") for r in o1.requests)
        assert any(r["path"] == "/who.txt" for r in o2.requests)
    finally:
        o1.close()
        o2.close()


def test_sighup_with_invalid_config_keeps_running_one(make_stack, sites):
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + sites["A"]}], workers=0)
    assert st.get("/who.txt").text == "A\n"
    good = open(st.cfg_path).read()
    with open(st.cfg_path, "w") as f:
        f.write(good.replace("vhosts:", "vhostz:"))
    st.gw.signal(signal.SIGHUP)
    assert _wait_for(lambda: "reload failed" in st.gw.log(), 3), "no log line about the failed reload"
    line = [l for l in st.gw.log().splitlines() if "reload failed" in l][0]
    assert "keeping the running configuration" in line
    assert st.cfg_path in line and "unknown key" in line, line
    for _ in range(5):
        r = st.get("/who.txt")
        assert r.status_code == 200 and r.text == "A\n"
    assert st.gw.alive()
    # A valid file again reloads normally.
    st.config["vhosts"] = [{"name": "a.test", "default": True, "origin": "file://" + sites["B"]}]
    st.write_config()
    st.gw.signal(signal.SIGHUP)
    assert _wait_for(lambda: st.get("/who.txt").text == "B\n", 3)


@pytest.mark.timeout_s(60)
def test_reload_storm_under_traffic(make_stack, sites, tmp_path):
    """SIGHUP every 50 ms, alternating two tables, while 4 clients request
    without pause: every answer is one of the two tables' answers, nothing
    crashes, and a file download spanning the reloads stays intact."""
    big = os.path.join(sites["A"], "big.bin")
    with open(big, "wb") as f:
        f.write(pattern_bytes(8 * 1024 * 1024, seed=11))
    with open(os.path.join(sites["B"], "big.bin"), "wb") as f:
        f.write(b"B" * 100)
    tables = [
        [{"name": "s.test", "default": True, "origin": "file://" + sites["A"]}],
        [{"name": "s.test", "default": True, "origin": "file://" + sites["B"]},
         {"name": "extra.test", "origin": "file://" + sites["C"], "dims": {"keyword": "x"}}],
    ]
    st = make_stack(tables[0], workers=0)
    stop = threading.Event()
    bad, counts = [], {"A\n": 0, "B\n": 0}

    def client():
        with harness.session() as s:
            while not stop.is_set():
                r = s.get(st.url("/who.txt"), timeout=10)
                if r.status_code != 200 or r.text not in counts:
                    bad.append((r.status_code, r.text[:80]))
                else:
                    counts[r.text] += 1

    # a slow reader on the 8 MB file of table A, started before the storm
    slow = socket.create_connection(("127.0.0.1", st.port), timeout=15)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    slow.sendall(b"GET /big.bin HTTP/1.1\r\nHost: s.test\r\nConnection: close\r\n\r\n")
    raw = b""
    while b"\r\n\r\n" not in raw:  # the response has started: the request holds table A
        b = slow.recv(32 * 1024)
        assert b
        raw += b
    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(40):
        st.config["vhosts"] = tables[(i + 1) % 2]
        st.write_config()
        st.gw.signal(signal.SIGHUP)
        raw += slow.recv(32 * 1024)
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(15)
    slow.settimeout(15)
    while True:
        b = slow.recv(1 << 20)
        if not b:
            break
        raw += b
    slow.close()
    assert st.gw.alive(), "the gateway died during the reload storm"
    assert not bad, bad[:5]
    assert counts["A\n"] > 0 and counts["B\n"] > 0, counts
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    assert body == pattern_bytes(8 * 1024 * 1024, seed=11), f"download spanning 40 reloads: {len(body)} bytes"
    # SIGHUPs that arrive while one is handled coalesce (POSIX signals do not
    # queue), so fewer than 40 reloads may be logged; the last file wins.
    assert 10 <= st.gw.log().count("reloaded") <= 40
    assert _wait_for(lambda: st.get("/who.txt").text == "A\n", 3)
