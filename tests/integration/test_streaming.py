"""Streaming: back-pressure from a slow client (first, on a fresh gateway),
a 1 GiB object through the gateway with bounded memory (http and file
origins), a client pause longer than read_timeout, and HTTP/2."""
import hashlib
import os
import socket
import time

import pytest

import harness
from harness import RssSampler, curl, pattern_bytes, rss_kb, sha256

GIB = 1 << 30
MB = 1 << 20


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("big"))
    for name, size in (("1g.bin", GIB), ("200m.bin", 200 * MB)):
        with open(os.path.join(d, name), "wb") as f:
            f.truncate(size)  # sparse: no disk, but the origin still sends every byte
    with open(os.path.join(d, "20m.bin"), "wb") as f:
        f.write(harness.pattern_bytes(20 * MB, seed=20))
    o = harness.Origin(d)
    yield d, o
    o.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, big):
    d, o = big
    st = harness.Stack(
        str(tmp_path_factory.mktemp("streaming")),
        vhosts=[
            {"name": "web.test", "default": True, "origin": o.url},
            {"name": "files.test", "origin": "file://" + d},
        ],
        # short, so that a read timeout that kept running while the gateway
        # itself paused the origin (slow client) would show
        gateway={"origin": {"read_timeout": "1s"}},
        workers=0,
    )
    yield st
    st.close()


@pytest.mark.timeout_s(60)
@pytest.mark.parametrize("host", ["web.test", "files.test"])
def test_slow_client_backpressure(stack, host):
    pid = stack.gw.pid
    base = rss_kb(pid)
    got = 0
    with RssSampler(pid, 0.1) as rss:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.settimeout(10)
        s.connect(("127.0.0.1", stack.port))
        s.sendall(f"GET /200m.bin HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end:
            b = s.recv(64 * 1024)
            assert b, "the gateway closed the connection early"
            got += len(b)
            time.sleep(0.05)
        s.close()
    growth_mb = (rss.max_kb - base) / 1024
    harness.MEASUREMENTS.append(
        f"slow client via {host}: read {got / MB:.1f} MB in 3 s of a 200 MB object, gateway RSS "
        f"{base / 1024:.1f} MB before, peak {rss.max_kb / 1024:.1f} MB (growth {growth_mb:.1f} MB)")
    print(harness.MEASUREMENTS[-1])
    assert got < 100 * MB  # the client really was slow
    assert growth_mb < 100, f"gateway RSS grew {growth_mb:.1f} MB for a client reading 64 KB / 50 ms"
    # The gateway is fine afterwards and the abandoned transfer is released.
    r = stack.get("/200m.bin", host=host, headers={"Range": "bytes=0-9"})
    assert r.status_code in (200, 206)
    time.sleep(0.5)
    assert stack.metric("refract_http_requests_inflight") == 0


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("host", ["web.test", "files.test"])
def test_1gib_download_bounded_memory(stack, host):
    pid = stack.gw.pid
    base = rss_kb(pid)
    with RssSampler(pid, 0.1) as rss:
        t0 = time.monotonic()
        r = curl(["-H", f"Host: {host}", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                  stack.url("/1g.bin")], timeout=100)
        took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    code, size = r.stdout.decode().split()
    assert code == "200"
    assert int(size) == GIB
    peak_mb = rss.max_kb / 1024
    harness.MEASUREMENTS.append(
        f"1 GiB via {host} ({'http' if host == 'web.test' else 'file'} origin): {took:.1f}s "
        f"({GIB / MB / took:.0f} MB/s), gateway RSS {base / 1024:.1f} MB before, peak {peak_mb:.1f} MB "
        f"over {len(rss.samples)} samples")
    print(harness.MEASUREMENTS[-1])
    assert len(rss.samples) >= 3
    assert peak_mb < 150, f"gateway RSS peaked at {peak_mb:.1f} MB while streaming 1 GiB"



@pytest.mark.timeout_s(60)
@pytest.mark.parametrize("host", ["web.test", "files.test"])
def test_client_pause_longer_than_read_timeout(stack, host):
    """The client stops reading for 3 s (read_timeout is 1 s): the gateway
    pauses the origin, and the read timeout must pause with it."""
    want = pattern_bytes(20 * MB, seed=20)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.settimeout(15)
    s.connect(("127.0.0.1", stack.port))
    s.sendall(f"GET /20m.bin HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    raw = b""
    while len(raw) < 2 * MB:
        b = s.recv(65536)
        assert b
        raw += b
    time.sleep(3)
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        raw += b
    s.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert len(body) == len(want), f"got {len(body)} of {len(want)} bytes after a 3 s client pause"
    assert sha256(body) == sha256(want)


@pytest.mark.timeout_s(60)
@pytest.mark.parametrize("host", ["web.test", "files.test"])
def test_http2_download_and_slow_client(stack, host, tmp_path):
    pid = stack.gw.pid
    out = tmp_path / "h2.bin"
    r = curl(["--http2-prior-knowledge", "-H", f"Host: {host}", "-o", str(out), "-w", "%{http_version} %{size_download}",
              stack.url("/20m.bin")], timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == f"2 {20 * MB}"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == sha256(pattern_bytes(20 * MB, seed=20))
    base = rss_kb(pid)
    with RssSampler(pid, 0.1) as rss:
        r = curl(["--http2-prior-knowledge", "-H", f"Host: {host}", "--limit-rate", "1M", "--max-time", "3",
                  "-o", "/dev/null", "-w", "%{size_download}", stack.url("/200m.bin")], timeout=20)
    assert r.returncode == 28, (r.returncode, r.stderr)  # stopped by --max-time, as intended
    growth = (rss.max_kb - base) / 1024
    harness.MEASUREMENTS.append(f"HTTP/2 slow client via {host}: {int(r.stdout) / MB:.1f} MB in 3 s of 200 MB, "
                                f"gateway RSS growth {growth:.1f} MB (peak {rss.max_kb / 1024:.1f} MB)")
    assert growth < 100
    time.sleep(0.5)
    assert stack.metric("refract_http_requests_inflight") == 0
