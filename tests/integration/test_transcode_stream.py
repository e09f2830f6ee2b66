"""Transcodes streamed while they are made (transcode.stream, on by
default): /v.EXT/mp4 answers with a fragmented MP4 whose first fragments
reach the client while the worker is still encoding the rest; the whole
file is cached once it is done, and requests that came meanwhile follow
the same transcode. A transcode that breaks off is a broken transfer for
everyone, never a short file presented as whole, and nothing is cached."""
import json
import os
import re
import subprocess
import threading
import time

import pytest
import requests

import harness
from test_transcode import _ffmpeg

DUR = 20


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("txs"))
    _ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={DUR}",
             "-f", "lavfi", "-i", f"sine=frequency=440:duration={DUR}",
             "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"], os.path.join(d, "v.mkv"))
    day_ago = time.time() - 86400  # a result is kept as long as its source may be: heuristically, 10% of its age
    os.utime(os.path.join(d, "v.mkv"), (day_ago, day_ago))
    return d


def _stack(make_stack, sources, spool, video_workers=1, **transcode):
    """A vhost that transcodes .mkv to at most 360p, and the same with its
    cache off (nocache.test); the workers and the gateway share a spool
    directory (what streaming needs)."""
    tc = dict({"max_height": 360}, **transcode)
    return make_stack([{"name": "vod.test", "default": True, "origin": "file://" + sources, "transcode": tc},
                       {"name": "nocache.test", "origin": "file://" + sources, "transcode": tc,
                        "cache": {"enable": False}}],
                      workers=0, video_workers=video_workers, video_worker={"jobs": 1},
                      bus={"spool_dir": str(spool), "job_timeout": "120s", "heartbeat_interval": "100ms", "liveness": 10})


def _probe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-count_frames", "-show_entries",
                          "format=duration:stream=codec_name,codec_type,width,height,nb_read_frames", path],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _check_whole(data, tmp_path, name):
    """A fragmented H.264/AAC MP4 of the whole source that decodes cleanly."""
    p = tmp_path / name
    p.write_bytes(data)
    assert data[4:8] == b"ftyp" and b"moof" in data and b"mvex" in data, "not a fragmented MP4"
    info = _probe(str(p))
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360)
    assert abs(int(streams["video"]["nb_read_frames"]) - DUR * 25) <= 2
    assert abs(float(info["format"]["duration"]) - DUR) < 0.3
    dec = subprocess.run(["ffmpeg", "-v", "error", "-i", str(p), "-f", "null", "-"], capture_output=True, text=True,
                         timeout=120)
    assert dec.returncode == 0 and dec.stderr.strip() == "", dec.stderr


def _wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _transcodes(st):
    return sum(w.log().count("video transcode 360p streamed") for w in st.workers)


@pytest.mark.timeout_s(180)
def test_first_bytes_come_while_the_worker_encodes(make_stack, sources, tmp_path):
    st = _stack(make_stack, sources, tmp_path / "spool")
    r = requests.get(st.url("/v.mkv/mp4"), headers={"Host": "vod.test"}, stream=True, timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "video/mp4"
    assert "Content-Length" not in r.headers and r.headers.get("Transfer-Encoding") == "chunked"
    assert "detail=streamed; stored" in r.headers["Cache-Status"], r.headers["Cache-Status"]
    etag = r.headers["ETag"]  # weak: the bytes are not known yet; the URL and the source's version are
    assert re.fullmatch(r'W/"[0-9a-f]{16}"', etag), etag
    first = r.raw.read(64 * 1024, decode_content=False)
    # the worker logs its transcode when it is done: not yet, with 64 KiB here
    assert len(first) == 64 * 1024 and first[4:8] == b"ftyp"
    assert _transcodes(st) == 0, "the first bytes came only once the transcode was done"
    data = first + r.raw.read(decode_content=False)
    r.close()
    _check_whole(data, tmp_path, "streamed.mp4")
    _wait_for(lambda: _transcodes(st) == 1, 10, "the worker's log of the transcode")
    # the finished file is cached: a hit with its length, Range answered
    h = st.get("/v.mkv/mp4", host="vod.test", timeout=30)
    assert h.status_code == 200 and h.content == data
    assert h.headers["Cache-Status"].startswith("refract; hit"), h.headers["Cache-Status"]
    assert int(h.headers["Content-Length"]) == len(data)
    assert h.headers["ETag"] == etag
    same = st.get("/v.mkv/mp4", host="vod.test", headers={"If-None-Match": etag}, timeout=30)
    assert same.status_code == 304 and same.headers["ETag"] == etag
    part = st.get("/v.mkv/mp4", host="vod.test", headers={"Range": "bytes=100-199"}, timeout=30)
    assert part.status_code == 206 and part.content == data[100:200]
    assert _transcodes(st) == 1


@pytest.mark.timeout_s(180)
def test_requests_meanwhile_follow_the_same_transcode(make_stack, sources, tmp_path):
    st = _stack(make_stack, sources, tmp_path / "spool")
    out = {}

    def get(k):
        out[k] = requests.get(st.url("/v.mkv/mp4"), headers={"Host": "vod.test"}, timeout=120)

    ts = [threading.Thread(target=get, args=(k,)) for k in range(3)]
    for t in ts:
        t.start()
        time.sleep(0.3)
    for t in ts:
        t.join(150)
    bodies = {out[k].content for k in range(3)}
    assert all(out[k].status_code == 200 for k in range(3)), [out[k].status_code for k in range(3)]
    assert len(bodies) == 1
    _check_whole(bodies.pop(), tmp_path, "collapsed.mp4")
    assert _transcodes(st) == 1
    statuses = sorted(out[k].headers["Cache-Status"] for k in range(3))
    assert sum("detail=streamed" in s for s in statuses) == 1, statuses
    assert sum("collapsed" in s for s in statuses) == 2, statuses


@pytest.mark.timeout_s(240)
def test_worker_killed_mid_stream_is_a_broken_transfer_and_nothing_is_kept(make_stack, sources, tmp_path):
    """kill -9 of the worker while it streams: the broker retries the job on
    the other worker, which refuses to restart a stream already under way;
    the client's transfer breaks off (no final chunk), nothing is cached,
    and the next request gets a whole transcode."""
    st = _stack(make_stack, sources, tmp_path / "spool", video_workers=2)
    r = requests.get(st.url("/v.mkv/mp4"), headers={"Host": "vod.test"}, stream=True, timeout=120)
    assert r.status_code == 200
    got = r.raw.read(64 * 1024, decode_content=False)
    assert len(got) == 64 * 1024
    busy = [w for w in st.workers if "video transcode" not in w.log()]
    victim = None
    deadline = time.monotonic() + 10
    while victim is None and time.monotonic() < deadline:  # the one with the job: its process is encoding
        cpu = {w: _cpu_ticks(w.popen.pid) for w in busy}
        time.sleep(0.3)
        moved = sorted(busy, key=lambda w: _cpu_ticks(w.popen.pid) - cpu[w])
        if _cpu_ticks(moved[-1].popen.pid) - cpu[moved[-1]] > 10:
            victim = moved[-1]
    assert victim is not None, "no worker is encoding"
    victim.kill9()
    with pytest.raises((requests.exceptions.ChunkedEncodingError, Exception)) as e:
        while r.raw.read(64 * 1024, decode_content=False):
            pass
        raise AssertionError("the broken stream ended like a whole one")
    assert not isinstance(e.value, AssertionError), e.value
    r.close()
    _wait_for(lambda: "the streamed result broke off" in st.gw.log(), 30, "the gateway's log of the break")
    after = st.get("/v.mkv/mp4", host="vod.test", timeout=150)
    assert after.status_code == 200, after.text
    assert not after.headers["Cache-Status"].startswith("refract; hit"), after.headers["Cache-Status"]
    _check_whole(after.content, tmp_path, "after.mp4")


@pytest.mark.timeout_s(180)
def test_a_client_that_leaves(make_stack, sources, tmp_path):
    """A client that leaves mid-stream: where the result will be cached the
    transcode goes on and the next request is a hit; where nothing is kept
    (cache off) the job is cancelled and the worker stops."""
    st = _stack(make_stack, sources, tmp_path / "spool")
    for host in ("vod.test", "nocache.test"):
        r = requests.get(st.url("/v.mkv/mp4"), headers={"Host": host}, stream=True, timeout=120)
        assert r.status_code == 200 and len(r.raw.read(64 * 1024, decode_content=False)) == 64 * 1024
        r.close()
        _wait_for(lambda: st.workers[0].log().count("video transcode 360p") == (1 if host == "vod.test" else 2), 60,
                  f"the worker's end of the {host} transcode")
    log = st.workers[0].log()
    assert log.count("video transcode 360p streamed") == 1, log  # vod.test's, finished
    stopped = [line for line in log.splitlines() if "video transcode 360p" in line][-1]
    assert "360p 504" in stopped and "job cancelled" in stopped, stopped  # nocache.test's, stopped
    h = st.get("/v.mkv/mp4", host="vod.test", timeout=30)
    assert h.status_code == 200 and h.headers["Cache-Status"].startswith("refract; hit"), h.headers["Cache-Status"]
    _check_whole(h.content, tmp_path, "left.mp4")


def _cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_stream_off_gives_the_faststart_file(make_stack, sources, tmp_path):
    st = _stack(make_stack, sources, tmp_path / "spool", stream=False)
    r = st.get("/v.mkv/mp4", host="vod.test", timeout=120)
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == len(r.content)
    assert b"moof" not in r.content and r.content.find(b"moov") < r.content.find(b"mdat")
    assert "detail=streamed" not in r.headers["Cache-Status"]
