"""Progressive HLS transcoding (seed 002 ch. 3): /v.EXT/hls/index.m3u8 is
the master playlist of the vhost's ladder (the rungs not above the
source's height), /v.EXT/hls/Hp/index.m3u8 a rung's media playlist made
from the source's header alone, /v.EXT/hls/Hp/seg-N.ts one segment,
transcoded to H.264/AAC when it is asked for. Segments made one at a time,
in any order, join into one stream: checked with ffprobe (durations
against #EXTINF, PTS continuous across segments for video and audio) and
by ffmpeg playing the master playlist through the gateway."""
import json
import os
import re
import subprocess
import time

import pytest

import harness

DUR = 14  # seconds: segments of 6, 6 and 2 s at the default duration


def _ffmpeg(args, out):
    subprocess.run(["ffmpeg", "-v", "error", "-y"] + args + [out], check=True, timeout=120)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("phls"))
    v = ["-f", "lavfi", "-i", f"testsrc2=size=854x480:rate=25:duration={DUR}"]
    a = ["-f", "lavfi", "-i", f"sine=frequency=440:duration={DUR}"]
    _ffmpeg(v + a + ["-c:v", "libvpx-vp9", "-b:v", "500k", "-deadline", "realtime", "-cpu-used", "8", "-g", "60",
                     "-c:a", "libopus"], os.path.join(d, "v.webm"))
    # MPEG-TS seeks by timestamp, not to a keyframe: segments must find one before their start
    _ffmpeg(v + a + ["-c:v", "mpeg2video", "-q:v", "5", "-c:a", "mp2"], os.path.join(d, "v.ts"))
    _ffmpeg(v + ["-c:v", "libx264", "-preset", "ultrafast"], os.path.join(d, "silent.mkv"))  # no audio
    with open(os.path.join(d, "text.mkv"), "w") as f:
        f.write("not a video\n" * 50)
    day_ago = time.time() - 86400  # results live as long as their source: a day-old file's are fresh for hours
    for name in os.listdir(d):
        os.utime(os.path.join(d, name), (day_ago, day_ago))
    return d


@pytest.fixture(scope="module")
def stack(tmp_path_factory, sources):
    work = str(tmp_path_factory.mktemp("phls-stack"))
    st = harness.Stack(
        work,
        vhosts=[{"name": "vod.test", "default": True, "origin": "file://" + sources},
                {"name": "short.test", "origin": "file://" + sources,
                 "hls": {"keyword": "stream", "duration": 7, "ladder": ["360p@600k", "240p"]}},
                {"name": "tiny.test", "origin": "file://" + sources, "hls": {"max_duration": 10}},
                {"name": "cached.test", "origin": "file://" + sources, "cache": {"enable": True}}],
        bus={"job_timeout": "60s"},
        vhost_defaults={"cache": {"enable": False}},
        workers=0,
        video_workers=1,
        video_worker={"jobs": 2},
    )
    yield st
    st.close()


def _get(st, path, host="vod.test"):
    return st.get(path, host=host, timeout=120)


def _packets(path):
    """{codec_type: sorted pts (90 kHz)} of a TS file."""
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_entries",
                          "packet=stream_index,pts:stream=index,codec_type,codec_name,width,height", path],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    kinds = {s["index"]: s for s in info["streams"]}
    pts = {}
    for p in info["packets"]:
        pts.setdefault(kinds[p["stream_index"]]["codec_type"], []).append(int(p["pts"]))
    return {k: sorted(v) for k, v in pts.items()}, {s["codec_type"]: s for s in info["streams"]}


def _media(text):
    """[(extinf, uri)] of a media playlist, and its target duration."""
    lines = text.strip().split("\n")
    segs = [(float(lines[i][8:].split(",")[0]), lines[i + 1]) for i in range(len(lines)) if lines[i].startswith("#EXTINF:")]
    return segs, int(re.search(r"#EXT-X-TARGETDURATION:(\d+)", text).group(1))


def test_master_playlist_lists_the_rungs_under_the_source(stack):
    r = _get(stack, "/v.webm/hls/index.m3u8")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    # default ladder 1080p, 720p, 480p, 360p; the source is 854x480
    assert r.text == ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n"
                      "#EXT-X-STREAM-INF:BANDWIDTH=1528000,RESOLUTION=854x480\n480p/index.m3u8\n"
                      "#EXT-X-STREAM-INF:BANDWIDTH=928000,RESOLUTION=640x360\n360p/index.m3u8\n"), r.text


@pytest.mark.parametrize("name,audio", [("v.webm", True), ("v.ts", True), ("silent.mkv", False)])
def test_segments_join_into_one_stream(stack, tmp_path, name, audio):
    r = _get(stack, f"/{name}/hls/360p/index.m3u8")
    assert r.status_code == 200, r.text
    segs, target = _media(r.text)
    assert [d for d, _ in segs[:2]] == [6.0, 6.0] and abs(segs[2][0] - 2) < 0.05 and target == 6, r.text
    assert [u for _, u in segs] == ["seg-0.ts", "seg-1.ts", "seg-2.ts"]
    parts = []
    for i in (2, 0, 1):  # any order: each segment is made alone
        s = _get(stack, f"/{name}/hls/360p/seg-{i}.ts")
        assert s.status_code == 200, s.text
        assert s.headers["Content-Type"] == "video/mp2t"
        p = tmp_path / f"seg-{i}.ts"
        p.write_bytes(s.content)
        pts, streams = _packets(str(p))
        assert streams["video"]["codec_name"] == "h264"
        assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360)
        assert ("audio" in streams) == audio
        if audio:
            assert streams["audio"]["codec_name"] == "aac"
        v = pts["video"]
        # 25 fps: the segment holds the frames of its EXTINF, no more, no fewer
        assert len(v) == round(segs[i][0] * 25), (i, len(v))
        assert abs((v[0] - 90000 * 10) / 90000 - 6 * i) < 0.04 + 0.001, (i, v[0])  # starts at its time (+10 s)
        parts.append((i, s.content))
    whole = tmp_path / "all.ts"
    whole.write_bytes(b"".join(c for _, c in sorted(parts)))
    pts, _ = _packets(str(whole))
    steps = {b - a for a, b in zip(pts["video"], pts["video"][1:])}
    assert steps == {3600}, steps  # every frame 40 ms after the last, across the joins
    if audio:
        steps = {b - a for a, b in zip(pts["audio"], pts["audio"][1:])}
        # AAC frames back to back (1024 samples, 90 kHz ticks rounded): no gap, no overlap at a join
        assert max(steps) - min(steps) <= 1, steps
    dec = subprocess.run(["ffmpeg", "-v", "error", "-i", str(whole), "-f", "null", "-"], capture_output=True,
                         text=True, timeout=60)
    assert dec.returncode == 0 and dec.stderr == "", dec.stderr


def test_ffmpeg_plays_the_master_playlist(stack, tmp_path):
    out = tmp_path / "played.mp4"
    run = subprocess.run(["ffmpeg", "-v", "error", "-y", "-headers", "Host: vod.test\r\n", "-i",
                          stack.url("/v.webm/hls/index.m3u8"), "-map", "0:p:0", "-c", "copy", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    info = json.loads(subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_entries",
                                      "format=duration:stream=codec_name,width,height", str(out)],
                                     capture_output=True, text=True, timeout=60).stdout)
    assert abs(float(info["format"]["duration"]) - DUR) < 0.2, info
    assert {s["codec_name"] for s in info["streams"]} == {"h264", "aac"}


def test_vhost_settings_keyword_duration_ladder(stack):
    r = _get(stack, "/v.webm/stream/index.m3u8", host="short.test")
    assert r.status_code == 200, r.text
    assert "RESOLUTION=640x360\n360p/index.m3u8" in r.text and "240p/index.m3u8" in r.text
    assert "BANDWIDTH=728000," in r.text  # 600k cap + 128k audio
    m = _get(stack, "/v.webm/stream/240p/index.m3u8", host="short.test")
    segs, target = _media(m.text)
    # 14.008 s in 7 s segments: the 0.008 s left joins the last one (no sliver of a segment)
    assert segs[0][0] == 7.0 and abs(segs[1][0] - 7.008) < 0.001 and len(segs) == 2 and target == 8, m.text
    s = _get(stack, "/v.webm/stream/240p/seg-1.ts", host="short.test")
    assert s.status_code == 200, s.text
    pts, streams = _packets_bytes(s.content)
    assert (streams["video"]["width"], streams["video"]["height"]) == (428, 240)  # 427 made even
    assert len(pts["video"]) == 7 * 25


def _packets_bytes(data):
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".ts") as f:
        f.write(data)
        f.flush()
        return _packets(f.name)


@pytest.mark.parametrize("path,host,status,text", [
    ("/v.webm/hls/999p/index.m3u8", "vod.test", 400, "'999p/index.m3u8' is not index.m3u8, Hp/index.m3u8 or Hp/seg-N.ts (H: 1080p, 720p, 480p, 360p)"),
    ("/v.webm/hls/360p/seg-3.ts", "vod.test", 404, "no segment 3: the video has 3"),
    ("/v.webm/hls/360p/seg-03.ts", "vod.test", 400, "is not index.m3u8"),
    ("/text.mkv/hls/index.m3u8", "vod.test", 415, "not a video that can be transcoded"),
    ("/missing.mkv/hls/index.m3u8", "vod.test", 404, "not found"),
    ("/v.webm/stream/index.m3u8", "vod.test", 200, None),  # another vhost's keyword: not this one's, the origin's 404
    ("/v.ts/hls/360p/index.m3u8", "tiny.test", 413, "the video is 14.0"),
])
def test_refusals(stack, path, host, status, text):
    r = _get(stack, path, host=host)
    if text is None:
        assert r.status_code == 404, (r.status_code, r.text)  # /v.webm/stream/… is a plain path there
        return
    assert r.status_code == status, (r.status_code, r.text)
    assert text in r.text, r.text


def test_next_segments_are_made_ahead(stack):
    """With the cache on, answering seg-0 asks for seg-1 and seg-2 in the
    background (hls.prefetch: 2): they are cache hits when the player
    comes for them. The made-ahead requests do not make more ahead."""
    r = _get(stack, "/v.webm/hls/360p/seg-0.ts", host="cached.test")
    assert r.status_code == 200, r.text
    assert "hit" not in r.headers.get("Cache-Status", "")
    for i in (1, 2):
        deadline = time.monotonic() + 60
        while True:  # made in the background: wait until it is cached
            h = stack.request("HEAD", f"/v.webm/hls/360p/seg-{i}.ts", host="cached.test", timeout=60,
                              headers={"Cache-Control": "only-if-cached"})
            if h.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert h.status_code == 200, (i, h.status_code, dict(h.headers))
        s = _get(stack, f"/v.webm/hls/360p/seg-{i}.ts", host="cached.test")
        assert s.status_code == 200 and "hit" in s.headers.get("Cache-Status", ""), dict(s.headers)
    # no chain: a made-ahead seg-1 would have asked for seg-3 when it was made, which would be done
    # (a 2 s segment) well within these 3 s; the clients' own GETs of seg-1 and seg-2 were hits
    time.sleep(3)
    assert "cached.test /v.webm/hls/360p/seg-3.ts" not in stack.gw.log()
