"""MP4 to HLS on the fly (seed 002 ch. 3, <MP4HLS>): /v.mp4/mp4hls/index.m3u8
and its MPEG-TS segments, from a file origin (the worker reads the file by
range itself) and from an http origin (the worker reads ranges back
through the gateway). Outputs are checked with ffprobe and by ffmpeg
playing the playlist through the gateway."""
import email.utils
import json
import os
import re
import subprocess
import threading
import time

import pytest

import harness

DUR = 30  # seconds of each test video


def _ffmpeg(args, out):
    subprocess.run(["ffmpeg", "-v", "error", "-y"] + args + [out], check=True, timeout=120)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("videos"))
    src = ["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={DUR}", "-f", "lavfi", "-i",
           f"sine=frequency=440:duration={DUR}"]
    enc = ["-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
           "-c:a", "aac", "-b:a", "64k"]
    _ffmpeg(src + enc + ["-movflags", "+faststart"], os.path.join(d, "v.mp4"))
    _ffmpeg(src + enc, os.path.join(d, "late.mp4"))  # moov after the mdat
    _ffmpeg(["-i", os.path.join(d, "v.mp4"), "-c", "copy", "-movflags", "+frag_keyframe+empty_moov+default_base_moof"],
            os.path.join(d, "frag.mp4"))  # samples in moof boxes
    _ffmpeg(["-f", "lavfi", "-i", f"sine=frequency=440:duration={DUR}", "-c:a", "aac"], os.path.join(d, "a.m4a"))
    _ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=4", "-c:v", "libx265", "-x265-params",
             "log-level=error"], os.path.join(d, "hevc.mp4"))
    _ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=2", "-c:v", "mpeg4"],
            os.path.join(d, "mp4v.mp4"))
    x265 = ["-c:v", "libx265", "-preset", "veryfast", "-x265-params"]
    _ffmpeg(src + x265 + ["log-level=error:keyint=50:min-keyint=50:scenecut=0:open-gop=0:bframes=3", "-tag:v", "hvc1",
                          "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart"],
            os.path.join(d, "hevc30.mp4"))  # closed GOPs, tagged as Apple's players want
    _ffmpeg(src + x265 + ["log-level=error:keyint=50:min-keyint=50:scenecut=0", "-c:a", "aac", "-b:a", "64k",
                          "-movflags", "+faststart"], os.path.join(d, "hevcopen.mp4"))  # x265's open GOPs
    with open(os.path.join(d, "text.mp4"), "w") as f:
        f.write("this is not a video\n" * 100)
    with open(os.path.join(d, "v.mp4"), "rb") as f:
        whole = f.read()
    with open(os.path.join(d, "cut.mp4"), "wb") as f:  # the mdat cut short
        f.write(whole[: len(whole) // 2])
    return d


@pytest.fixture(scope="module")
def stack(tmp_path_factory, videos):
    origin = harness.Origin(videos)
    work = str(tmp_path_factory.mktemp("video"))
    st = harness.Stack(
        work,
        bus={"spool_dir": os.path.join(work, "spool")},  # trims come back by reference
        vhosts=[
            {"name": "vod.test", "default": True, "origin": "file://" + videos},
            {"name": "web.test", "origin": origin.url},
            {"name": "cached.test", "origin": origin.url, "cache": {"enable": True}},
            {"name": "nom4a.test", "origin": "file://" + videos, "trimming": {"m4a": False, "accurate": False},
             "thumbnail": {"sprites": False}},
            {"name": "seed.test", "origin": "file://" + videos,
             "hls": {"keyword": "phls"},  # progressive HLS's default keyword is taken by mp4hls here
             "mp4hls": {"keyword": "hls", "index": "main.m3u8", "version": 4, "sequence": 100, "duration": 4,
                        "alternates": True, "alternates_name": "master.m3u8"}},
        ],
        vhost_defaults={"cache": {"enable": False}},
        workers=0,
        video_workers=1,
        # small read-ahead: the test videos are ~1.3 MB, the default is 1 MB
        video_worker={"jobs": 2, "read_ahead": "64KB"},
    )
    st.origin = origin
    yield st
    st.close()
    origin.close()


def _get(st, path, host="vod.test", **kw):
    return st.get(path, host=host, timeout=60, **kw)


def _playlist(text):
    """(target duration, media sequence, [(extinf, uri)], ended)"""
    lines = text.strip().split("\n")
    assert lines[0] == "#EXTM3U", text
    target = int(re.search(r"#EXT-X-TARGETDURATION:(\d+)", text).group(1))
    seq = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))
    segs = []
    for i, line in enumerate(lines):
        if line.startswith("#EXTINF:"):
            segs.append((float(line[8:].split(",")[0]), lines[i + 1]))
    return target, seq, segs, lines[-1] == "#EXT-X-ENDLIST"


def _probe(path, *args):
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json"] + list(args) + [path], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("host,name", [("vod.test", "v.mp4"), ("vod.test", "late.mp4"), ("web.test", "v.mp4"),
                                       ("web.test", "late.mp4"), ("cached.test", "v.mp4")])
def test_playlist_and_segments(stack, tmp_path, host, name):
    r = _get(stack, f"/{name}/mp4hls/index.m3u8", host=host)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/vnd.apple.mpegurl"
    target, seq, segs, ended = _playlist(r.text)
    assert ended and seq == 0 and "#EXT-X-VERSION:3" in r.text and "#EXT-X-PLAYLIST-TYPE:VOD" in r.text
    # keyframes every 2 s, target 10 s: three segments of exactly 10 s
    assert [d for d, _ in segs] == [10.0, 10.0, 10.0]
    assert target == 10
    assert [u for _, u in segs] == ["seg-0.ts", "seg-1.ts", "seg-2.ts"]
    parts = []
    for i, (_, uri) in enumerate(segs):
        s = _get(stack, f"/{name}/mp4hls/{uri}", host=host)
        assert s.status_code == 200, s.text
        assert s.headers["Content-Type"] == "video/mp2t"
        p = tmp_path / uri
        p.write_bytes(s.content)
        parts.append(s.content)
        info = _probe(str(p), "-show_entries", "stream=codec_name")
        assert sorted(x["codec_name"] for x in info["streams"]) == ["aac", "h264"]
    whole = tmp_path / "all.ts"
    whole.write_bytes(b"".join(parts))
    fmt = _probe(str(whole), "-show_entries", "format=duration")
    assert abs(float(fmt["format"]["duration"]) - DUR) < 0.2


def test_ffmpeg_plays_the_playlist_through_the_gateway(stack, tmp_path):
    """The HLS demuxer fetches the playlist and every segment over HTTP and
    remuxes them into one file: timestamps must be one timeline."""
    out = tmp_path / "played.mp4"
    url = stack.url("/v.mp4/mp4hls/index.m3u8")
    run = subprocess.run(["ffmpeg", "-v", "error", "-y", "-headers", "Host: web.test\r\n", "-i", url, "-c", "copy",
                          str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    info = _probe(str(out), "-show_entries", "stream=codec_name,nb_frames:format=duration")
    assert abs(float(info["format"]["duration"]) - DUR) < 0.2
    frames = {s["codec_name"]: int(s["nb_frames"]) for s in info["streams"]}
    assert frames["h264"] == DUR * 25


def test_http_origin_is_read_by_range_not_whole(stack, videos):
    """Without a cache, the gateway forwards the worker's ranges: a playlist
    and one segment move a fraction of the file from the origin."""
    size = os.path.getsize(os.path.join(videos, "late.mp4"))
    before = len(stack.origin.requests)
    assert _get(stack, "/late.mp4/mp4hls/seg-1.ts", host="web.test").status_code == 200
    reqs = [q for q in stack.origin.requests[before:] if q["path"] == "/late.mp4"]
    assert reqs and all("range" in q["headers"] for q in reqs), reqs
    moved = 0
    for q in reqs:
        a, b = re.match(r"bytes=(\d+)-(\d+)", q["headers"]["range"]).groups()
        moved += min(int(b), size - 1) - int(a) + 1
    # the moov (at the end) and segment 1's samples (a third of the file)
    assert moved < size * 0.6, (moved, size)


def test_seed_settings(stack):
    """keyword, index name, version, sequence, duration and alternates from
    the vhost's mp4hls section."""
    r = _get(stack, "/v.mp4/hls/main.m3u8", host="seed.test")
    assert r.status_code == 200, r.text
    target, seq, segs, _ = _playlist(r.text)
    assert seq == 100 and "#EXT-X-VERSION:4" in r.text
    assert [d for d, _ in segs] == [4.0] * 7 + [2.0] and target == 4
    m = _get(stack, "/v.mp4/hls/master.m3u8", host="seed.test")
    assert m.status_code == 200
    assert re.search(r"#EXT-X-STREAM-INF:BANDWIDTH=\d+\nmain.m3u8\n", m.text), m.text
    assert _get(stack, "/v.mp4/mp4hls/index.m3u8", host="seed.test").status_code != 200  # another keyword here
    assert _get(stack, "/v.mp4/mp4hls/playlist.m3u8").status_code == 400  # alternates off on vod.test


def test_audio_only(stack):
    r = _get(stack, "/a.m4a/mp4hls/index.m3u8")
    assert r.status_code == 200, r.text
    _, _, segs, _ = _playlist(r.text)
    assert abs(sum(d for d, _ in segs) - DUR) < 0.05
    s = _get(stack, "/a.m4a/mp4hls/seg-0.ts")
    assert s.status_code == 200 and len(s.content) > 1000


@pytest.mark.parametrize("path,status,text", [
    ("/v.mp4/mp4hls/seg-3.ts", 404, "no segment 3: the video has 3"),
    ("/v.mp4/mp4hls/seg-03.ts", 400,
     "bad mp4hls chain: 'seg-03.ts' is not index.m3u8, seg-N.ts, init.mp4 or seg-N.m4s (N from 0)"),
    ("/v.mp4/mp4hls/other.m3u8", 400,
     "bad mp4hls chain: 'other.m3u8' is not index.m3u8, seg-N.ts, init.mp4 or seg-N.m4s (N from 0)"),
    ("/missing.mp4/mp4hls/index.m3u8", 404, None),
    ("/text.mp4/mp4hls/index.m3u8", 415, "not a video mp4hls can segment: "),
    ("/mp4v.mp4/mp4hls/index.m3u8", 415, "unsupported video codec mpeg4"),
    ("/cut.mp4/mp4hls/index.m3u8", 415, "truncated"),
])
@pytest.mark.parametrize("host", ["vod.test", "web.test"])
def test_refusals_are_clear(stack, host, path, status, text):
    r = _get(stack, path, host=host)
    assert r.status_code == status, (r.status_code, r.text)
    assert r.text.count("\n") == 1
    if text:
        assert text in r.text, r.text


def test_index_is_reused_for_segments(stack):
    """Segments after the playlist find the parsed index in the worker."""
    assert _get(stack, "/late.mp4/mp4hls/index.m3u8").status_code == 200
    assert _get(stack, "/late.mp4/mp4hls/seg-2.ts").status_code == 200
    log = stack.workers[0].log()
    seg = [line for line in log.splitlines() if "video hls segment 2 index=" in line]
    assert seg and "index=cached 200" in seg[-1], seg[-3:]


# ---- thumbnails ----------------------------------------------------------------------------------


def _psnr(a, b):
    """PSNR (dB) of two images of one size, by ffmpeg's psnr filter; inf when identical."""
    out = subprocess.run(["ffmpeg", "-v", "info", "-i", str(a), "-i", str(b), "-lavfi", "psnr", "-f", "null", "-"],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"average:(\S+)", out.stderr)
    assert m, out.stderr[-500:]
    return float("inf") if m.group(1) == "inf" else float(m.group(1))


def _ref_frame(videos, tmp_path, t, name="v.mp4"):
    ref = tmp_path / f"ref-{t}.png"
    _ffmpeg(["-ss", str(t), "-i", os.path.join(videos, name), "-frames:v", "1"], str(ref))
    return ref


@pytest.mark.parametrize("host", ["vod.test", "web.test"])
def test_thumbnail_is_the_frame_at_the_time(stack, videos, tmp_path, host):
    """Decoded from the keyframe before 12.5 s up to it: the frame ffmpeg
    shows at 12.5 s, not its neighbour or the keyframe."""
    r = _get(stack, "/v.mp4/thumbnail/12.5/png", host=host)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "image/png"
    ours = tmp_path / "ours.png"
    ours.write_bytes(r.content)
    at = _psnr(ours, _ref_frame(videos, tmp_path, 12.5))
    assert at > 45, at
    assert _psnr(ours, _ref_frame(videos, tmp_path, 12.54)) < at - 5  # the next frame differs
    assert _psnr(ours, _ref_frame(videos, tmp_path, 12.0)) < at - 5  # the keyframe too
    clock = _get(stack, "/v.mp4/thumbnail/00:12.500/png", host=host)
    assert clock.content == r.content


@pytest.mark.parametrize("host", ["vod.test", "web.test"])
def test_thumbnail_and_trim_of_a_fragmented_source(stack, videos, tmp_path, host):
    """A fragmented MP4 (samples in moof boxes) gives the frame ffmpeg shows
    at the time, and is trimmed on frames as a faststart file is: the first
    frame of 11-19 s is ffmpeg's at 11 s in that file, the last its frame at
    18.96 s, 200 frames; on keyframes the cut starts on the keyframe before
    11 s (10.08 s: with no edit list, the B-frames' delay is in the times)."""
    r = _get(stack, "/frag.mp4/thumbnail/12.5/png", host=host)
    assert r.status_code == 200, r.text
    ours = tmp_path / "ours.png"
    ours.write_bytes(r.content)
    at = _psnr(ours, _ref_frame(videos, tmp_path, 12.5, "frag.mp4"))
    assert at > 45, at
    r, info = _trimmed(stack, tmp_path, "/frag.mp4?trimming=11-19", host=host)
    assert r.headers["X-Refract-Note"] == "cut on frames: 11.000-19.000; 50 frame(s) re-encoded", r.headers
    assert {s["codec_type"]: s.get("nb_frames") for s in info["streams"]}["video"] == "200", info
    out = tmp_path / "trim.mp4"
    for n, t in [(0, 11), (199, 18.96)]:
        got = _frame(out, n, tmp_path / f"frag-{n}.png")
        same = _psnr(got, _ref_frame(videos, tmp_path, t, "frag.mp4"))
        near = _psnr(got, _ref_frame(videos, tmp_path, round(t + 0.04, 2), "frag.mp4"))
        assert same > 35 and same > near + 10, (n, t, same, near)
    r, _ = _trimmed(stack, tmp_path, "/frag.mp4?trimming=11-14&accurate=0", host=host)
    first = _frame(tmp_path / "trim.mp4", 0, tmp_path / "frag-key.png")
    assert r.headers["X-Refract-Note"] == "cut on keyframes: 10.080-14.080", r.headers
    assert _psnr(first, _ref_frame(videos, tmp_path, 10.08, "frag.mp4")) > 45  # copied: the keyframe itself


def test_thumbnail_keyframe_size_and_formats(stack, videos, tmp_path):
    kf = _get(stack, "/v.mp4/thumbnail/13.9/keyframe/png")
    assert kf.status_code == 200
    p = tmp_path / "kf.png"
    p.write_bytes(kf.content)
    assert _psnr(p, _ref_frame(videos, tmp_path, 12.0)) > 45  # keyframes every 2 s
    small = _get(stack, "/v.mp4/thumbnail/10/160x0")
    assert small.status_code == 200 and small.headers["Content-Type"] == "image/jpeg"
    info = harness.image_info(small.content, str(tmp_path))
    assert (info["width"], info["height"]) == (160, 120)
    boxed = harness.image_info(_get(stack, "/v.mp4/thumbnail/10/100x100").content, str(tmp_path))
    assert (boxed["width"], boxed["height"]) == (100, 76)  # fitted, even sides
    big = harness.image_info(_get(stack, "/v.mp4/thumbnail/10/2000x2000").content, str(tmp_path))
    assert (big["width"], big["height"]) == (320, 240)  # never enlarged
    webp = _get(stack, "/v.mp4/thumbnail/10/webp")
    assert webp.headers["Content-Type"] == "image/webp" and webp.content[:4] == b"RIFF" and webp.content[8:12] == b"WEBP"
    # the seed's form: /{endpoint}/{time}/{origin URL}
    seed = _get(stack, "/thumbnail/10/v.mp4")
    assert seed.status_code == 200 and seed.content == _get(stack, "/v.mp4/thumbnail/10").content
    # any codec libavcodec decodes, not only what HLS carries
    hevc = _get(stack, "/hevc.mp4/thumbnail/1")
    assert hevc.status_code == 200 and hevc.headers["Content-Type"] == "image/jpeg"


def test_thumbnail_reads_a_fraction_of_the_source(stack, videos):
    size = os.path.getsize(os.path.join(videos, "late.mp4"))
    before = len(stack.origin.requests)
    assert _get(stack, "/late.mp4/thumbnail/25.5", host="web.test").status_code == 200
    moved = 0
    for q in stack.origin.requests[before:]:
        a, b = re.match(r"bytes=(\d+)-(\d+)", q["headers"]["range"]).groups()
        moved += min(int(b), size - 1) - int(a) + 1
    assert moved < size * 0.35, (moved, size)


@pytest.mark.parametrize("path,status,text", [
    ("/v.mp4/thumbnail/31", 400, "time 31.000 s is past the end of the video (30."),
    ("/v.mp4/thumbnail/abc", 400, "bad thumbnail chain: 'abc' is not a time"),
    ("/v.mp4/thumbnail/10/gif", 400, "'gif' is not WxH (up to 16384), jpeg, png, webp or keyframe"),
    ("/v.mp4/thumbnail/1:2:3:4", 400, "is not a time"),
    ("/a.m4a/thumbnail/1", 415, "no video track"),
    ("/text.mp4/thumbnail/1", 415, "not an MP4/MOV file"),
    ("/missing.mp4/thumbnail/1", 404, None),
])
def test_thumbnail_refusals(stack, path, status, text):
    r = _get(stack, path)
    assert r.status_code == status, (r.status_code, r.text)
    if text:
        assert text in r.text, r.text


# ---- trimming ------------------------------------------------------------------------------------


def _boxes(data):
    """The top-level MP4 box types in order."""
    out, i = [], 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i:i + 4], "big")
        out.append(data[i + 4:i + 8].decode("latin1"))
        if size == 1:
            size = int.from_bytes(data[i + 8:i + 16], "big")
        if size < 8:
            break
        i += size
    return out


def _trimmed(stack, tmp_path, path, host="vod.test", **kw):
    r = _get(stack, path, host=host, **kw)
    assert r.status_code == 200, r.text
    p = tmp_path / "trim.mp4"
    p.write_bytes(r.content)
    info = _probe(str(p), "-show_entries", "format=duration:stream=codec_type,duration,start_time,nb_frames")
    return r, info


@pytest.mark.parametrize("host", ["vod.test", "web.test"])
@pytest.mark.parametrize("query,note,dur", [
    ("trimming=10-20", "on frames: 10.000-20.000; 0 frame(s) re-encoded", 10.0),  # on keyframes: all copied
    ("trimming=11-19", "on frames: 11.000-19.000; 50 frame(s) re-encoded", 8.0),  # 1 s of each end GOP
    ("trimming=2.5-4.3,20.1-22.7", "on frames: 2.520-4.320,20.120-22.720; 110 frame(s) re-encoded", 4.4),
    ("trimming=2-4,20-22", "on frames: 2.000-4.000,20.000-22.000; 0 frame(s) re-encoded", 4.0),  # joined in order
    ("trimming=24-", "on frames: 24.000-30.000; 0 frame(s) re-encoded", 6.0),  # to the end
    ("trimming=25.5-", "on frames: 25.520-30.000; 12 frame(s) re-encoded", 4.48),
    ("start=4&end=8", "on frames: 4.000-8.000; 0 frame(s) re-encoded", 4.0),  # nginx mp4 module style
    ("trimming=2-4%2C20-22", "on frames: 2.000-4.000,20.000-22.000; 0 frame(s) re-encoded", 4.0),  # forms' comma
    ("trimming=11-19&accurate=0", "on keyframes: 10.000-20.000", 10.0),  # outward to keyframes (every 2 s)
    ("accurate=0&trimming=2.5-4.3,20.1-22.7", "on keyframes: 2.000-6.000,20.000-24.000", 8.0),
])
def test_trimming(stack, tmp_path, host, query, note, dur):
    r, info = _trimmed(stack, tmp_path, f"/v.mp4?{query}", host=host)
    assert r.headers["Content-Type"] == "video/mp4"
    assert r.headers["X-Refract-Note"] == f"cut {note}"
    assert abs(float(info["format"]["duration"]) - dur) < 0.1, info
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert int(streams["video"]["nb_frames"]) == round(dur * 25)
    assert abs(float(streams["audio"]["duration"]) - dur) < 0.1  # A/V together
    assert abs(float(streams["audio"]["start_time"]) - float(streams["video"]["start_time"])) < 0.05
    boxes = _boxes(r.content)
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # faststart
    dec = subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "trim.mp4"), "-f", "null", "-"],
                         capture_output=True, text=True, timeout=60)
    assert dec.returncode == 0 and dec.stderr == "", dec.stderr  # every frame decodes, copied or re-encoded


def _frame(path, n, out):
    """Frame n (from 0) of the video at path, as a PNG at out."""
    _ffmpeg(["-i", str(path), "-vf", f"select=eq(n\\,{n})", "-frames:v", "1"], str(out))
    return out


def test_trimming_frames_are_the_sources(stack, videos, tmp_path):
    """Cut on frames: the first frame of a trim from 11 s is the frame
    ffmpeg shows at 11 s (re-encoded, so close, not equal: well above the
    next frame's likeness), the last before 19 s is the source's at
    18.96 s, and the join of two ranges is exact on both sides. Cut on
    keyframes (accurate=0), the first frame is the keyframe at 10 s."""
    _trimmed(stack, tmp_path, "/v.mp4?trimming=11-19,25.5-27")
    out = tmp_path / "trim.mp4"
    pairs = [(0, 11), (199, 18.96), (200, 25.52), (236, 26.96)]
    for n, t in pairs:
        ours = _frame(out, n, tmp_path / f"ours-{n}.png")
        same, near = _psnr(ours, _ref_frame(videos, tmp_path, t)), _psnr(ours, _ref_frame(videos, tmp_path, t + 0.04))
        assert same > 35 and same > near + 10, (n, t, same, near)
    r, _ = _trimmed(stack, tmp_path, "/v.mp4?trimming=11-14&accurate=0")
    first = _frame(tmp_path / "trim.mp4", 0, tmp_path / "first-key.png")
    assert _psnr(first, _ref_frame(videos, tmp_path, 10)) > 45  # copied: the keyframe itself


def test_hevc_trim_on_frames(stack, videos, tmp_path):
    """HEVC cut on frames: libx265 re-encodes the partial groups, their
    parameter sets renumbered beside the source's; the first and last
    frames of each range are the source's frames at those times, every
    frame decodes, audio stays with the video; the trim's HLS (fMP4)
    plays through ffmpeg with every frame."""
    r, info = _trimmed(stack, tmp_path, "/hevc30.mp4?trimming=11-19,25.5-27")
    assert r.headers["X-Refract-Note"] == "cut on frames: 11.000-19.000,25.520-27.000; 87 frame(s) re-encoded"
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert int(streams["video"]["nb_frames"]) == 237
    assert abs(float(streams["audio"]["duration"]) - 9.48) < 0.1
    out = tmp_path / "trim.mp4"
    tag = _probe(str(out), "-select_streams", "v", "-show_entries", "stream=codec_tag_string")["streams"][0]
    assert tag["codec_tag_string"] == "hvc1"  # the source's: every parameter set in the hvcC, none in-band
    dec = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out), "-f", "null", "-"],
                         capture_output=True, text=True, timeout=60)
    assert dec.returncode == 0 and dec.stderr == "", dec.stderr
    for n, t in [(0, 11), (199, 18.96), (200, 25.52), (236, 26.96)]:
        ours = _frame(out, n, tmp_path / f"ours-{n}.png")
        same = _psnr(ours, _ref_frame(videos, tmp_path, t, "hevc30.mp4"))
        near = _psnr(ours, _ref_frame(videos, tmp_path, round(t + 0.04, 2), "hevc30.mp4"))
        assert same > 35 and same > near + 10, (n, t, same, near)
    played = tmp_path / "played.mkv"
    run = subprocess.run(["ffmpeg", "-v", "error", "-y", "-i",
                          stack.url("/hevc30.mp4?trimming=11-19,25.5-27/mp4hls/index.m3u8"), "-map", "0:v",
                          "-f", "framemd5", str(played)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert sum(1 for line in played.read_text().splitlines() if not line.startswith("#")) == 237


def test_hevc_open_gop_trim_on_keyframes(stack, tmp_path):
    """An open-GOP HEVC source (x265's default: leading pictures refer to
    the group before) is cut on keyframes, and the note says why; the
    range ends with its last decodable frame, so every frame decodes and
    the audio ends with the video."""
    r, info = _trimmed(stack, tmp_path, "/hevcopen.mp4?trimming=11-19")
    note = r.headers["X-Refract-Note"]
    assert note.startswith("cut on keyframes (an open-GOP source (leading pictures refer to the group before)): "
                           "10.000-19."), note
    end = float(note.rsplit("-", 1)[1])
    assert 19.5 < end < 20
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert int(streams["video"]["nb_frames"]) == round((end - 10) * 25)
    assert abs(float(streams["audio"]["duration"]) - (end - 10)) < 0.1
    dec = subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "trim.mp4"), "-f", "null", "-"],
                         capture_output=True, text=True, timeout=60)
    assert dec.returncode == 0 and dec.stderr == "", dec.stderr


def test_trim_of_another_codec_is_on_keyframes(stack, tmp_path):
    """MPEG-4 part 2 (no re-encoder for it) is cut on keyframes, and says
    why; its frame size, which only its bitstream has, is found for the
    MP4 it is written into."""
    r, info = _trimmed(stack, tmp_path, "/mp4v.mp4?trimming=0.5-1.5")
    assert r.headers["X-Refract-Note"].startswith("cut on keyframes (exact cuts need H.264 or HEVC): "), r.headers
    v = [s for s in _probe(str(tmp_path / "trim.mp4"), "-show_entries", "stream=codec_name,width,height")["streams"]]
    assert v == [{"codec_name": "mpeg4", "width": 160, "height": 120}], v
    dec = subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "trim.mp4"), "-f", "null", "-"],
                         capture_output=True, text=True, timeout=60)
    assert dec.returncode == 0 and dec.stderr == "", dec.stderr


def test_trimming_audio_and_range(stack, tmp_path):
    r, info = _trimmed(stack, tmp_path, "/a.m4a?trimming=5-10")
    assert r.headers["Content-Type"] == "audio/mp4"
    # <M4ATrimming>OFF</M4ATrimming> (trimming.m4a: false): the file as it is; MP4s still
    # trimmed, on keyframes there (trimming.accurate: false)
    with open(os.path.join(stack.config["vhosts"][0]["origin"][len("file://"):], "a.m4a"), "rb") as f:
        assert _get(stack, "/a.m4a?trimming=5-10", host="nom4a.test").content == f.read()
    v = _get(stack, "/v.mp4?trimming=11-19", host="nom4a.test")
    assert v.headers["X-Refract-Note"] == "cut on keyframes: 10.000-20.000"
    assert r.headers["X-Refract-Note"].startswith("cut on audio frames: 4.99")  # AAC frames of 21.3 ms
    assert abs(float(info["format"]["duration"]) - 5) < 0.1
    whole = _get(stack, "/v.mp4?trimming=2-6").content
    part = _get(stack, "/v.mp4?trimming=2-6", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(whole)}"
    assert os.listdir(stack.config["bus"]["spool_dir"]) == []  # results by reference are taken


@pytest.mark.parametrize("host", ["vod.test", "web.test"])
def test_trimming_over_max_ratio_sends_the_original(stack, videos, host):
    with open(os.path.join(videos, "v.mp4"), "rb") as f:
        whole = f.read()
    r = _get(stack, "/v.mp4?trimming=0-20", host=host)  # 20 of 30 s: over 50 %
    assert r.status_code == 200 and r.headers.get("X-Refract-Fallback") == "trim_over_max_ratio", dict(r.headers)
    assert r.content == whole
    part = _get(stack, "/v.mp4?trimming=0-20", host=host, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == whole[:100]


@pytest.mark.parametrize("query,status,text", [
    ("trimming=40-50", 400, "range 1 starts at 40.000 s, past the end of the source (30."),
    ("trimming=abc", 400, "trimming: 'abc' is not START-END in seconds"),
    ("trimming=5-2", 400, "is not START-END"),
    ("start=9&end=3", 400, "start and end are seconds, end after start"),
    ("trimming=" + ",".join(["1-2"] * 65), 400, "at most 64 ranges"),
    ("trimming=1-2&accurate=yes", 400, "accurate is 0 (cut on keyframes) or 1 (cut on frames)"),
])
def test_trimming_refusals(stack, query, status, text):
    r = _get(stack, f"/v.mp4?{query}")
    assert r.status_code == status, (r.status_code, r.text)
    assert text in r.text, r.text


def test_trimming_without_a_spool_sends_bytes(make_stack, videos, tmp_path):
    st = make_stack([{"name": "vod.test", "default": True, "origin": "file://" + videos}], workers=0,
                    video_workers=1, vhost_defaults={"cache": {"enable": False}})
    r = st.get("/v.mp4?trimming=10-20", host="vod.test", timeout=60)
    assert r.status_code == 200, r.text
    p = tmp_path / "t.mp4"
    p.write_bytes(r.content)
    assert abs(float(_probe(str(p), "-show_entries", "format=duration")["format"]["duration"]) - 10) < 0.1


# ---- a worker killed mid-job ---------------------------------------------------------------------


def _worker_reading(st, workers):
    """The video worker with a connection open to the gateway's listener
    (an edge: read in progress), from ss."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", "dst", f"127.0.0.1:{st.port}"],
                         capture_output=True, text=True, timeout=10).stdout
    for w in workers:
        if f"pid={w.pid}," in out:
            return w
    return None


def test_worker_killed_mid_job_is_retried(make_stack, videos):
    """kill -9 of the worker reading a source: the broker gives the job to
    the other worker (bus.retries) and the client gets a whole playlist."""
    ctl = harness.ControlledOrigin(videos)
    try:
        st = make_stack([{"name": "web.test", "default": True, "origin": ctl.url}], workers=0, video_workers=2,
                        video_worker={"jobs": 1}, vhost_defaults={"cache": {"enable": False}},
                        bus={"heartbeat_interval": "100ms", "liveness": 10})
        ctl.hold_file("/v.mp4")
        out = {}
        t = threading.Thread(target=lambda: out.update(r=st.get("/v.mp4/mp4hls/index.m3u8", host="web.test",
                                                                 timeout=60)))
        t.start()
        victim = None
        deadline = time.monotonic() + 10
        while victim is None and time.monotonic() < deadline:
            victim = _worker_reading(st, st.workers)
            time.sleep(0.05)
        assert victim is not None, "no worker is reading the source"
        victim.kill9()
        ctl.release_file("/v.mp4")
        t.join(60)
        r = out["r"]
        assert r.status_code == 200, r.text
        _, _, segs, ended = _playlist(r.text)
        assert ended and len(segs) == 3
        survivor = [w for w in st.workers if w is not victim][0]
        assert "hls media index=read 200" in survivor.log()
        assert "bus: retrying video job after its worker died" in st.gw.log()
    finally:
        ctl.close()


# ---- sprites (scrub previews) ----------------------------------------------------------------------


# frag.mp4: samples in moof boxes, and no edit list: its frames are shown
# from 0.08 s to 30.08 s, so 2 s tiles take 16 cues, one on a second sheet
@pytest.mark.parametrize("name,tiles", [("v.mp4", 15), ("frag.mp4", 16)])
def test_sprite_sheet_and_index(stack, videos, tmp_path, name, tiles):
    r = _get(stack, f"/{name}/sprite/2/5x3/64x0/0.jpg")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "image/jpeg"
    info = harness.image_info(r.content, str(tmp_path))
    assert (info["width"], info["height"]) == (5 * 64, 3 * 48)  # 4:3 tiles from the 320x240 video
    if name == "v.mp4":  # a keyframe at each tile's time: one frame decoded a tile, none between them
        made = [line for line in stack.workers[0].log().splitlines() if "video sprite sheet 0 (320x144" in line]
        assert made and "(320x144, 15 decoded)" in made[-1], made[-1:]
    sheet = tmp_path / "sheet.jpg"
    sheet.write_bytes(r.content)
    # tile 6 (row 1, column 1) is the frame at 12 s
    tile = tmp_path / "tile.png"
    _ffmpeg(["-i", str(sheet), "-vf", "crop=64:48:64:48"], str(tile))
    ref = tmp_path / "ref12.png"
    _ffmpeg(["-ss", "12", "-i", os.path.join(videos, name), "-frames:v", "1", "-vf", "scale=64:48"], str(ref))
    ref14 = tmp_path / "ref14.png"
    _ffmpeg(["-ss", "14", "-i", os.path.join(videos, name), "-frames:v", "1", "-vf", "scale=64:48"], str(ref14))
    assert _psnr(tile, ref) > _psnr(tile, ref14) + 3
    vtt = _get(stack, f"/{name}/sprite/2/5x3/64x0/sprite.vtt")
    assert vtt.status_code == 200 and vtt.headers["Content-Type"] == "text/vtt"
    cues = vtt.text.split("\n\n")
    assert cues[0] == "WEBVTT" and len(cues) == 1 + tiles
    assert cues[1] == "00:00:00.000 --> 00:00:02.000\n0.jpg#xywh=0,0,64,48"
    assert cues[7].startswith("00:00:12.000 --> 00:00:14.000\n0.jpg#xywh=64,48,64,48")
    sheets = -(-tiles // 15)  # 15 tiles a sheet
    assert _get(stack, f"/{name}/sprite/2/5x3/64x0/{sheets - 1}.jpg").status_code == 200
    assert _get(stack, f"/{name}/sprite/2/5x3/64x0/{sheets}.jpg").status_code == 404
    two = _get(stack, f"/{name}/sprite/2/3x2/64x48/sprite.vtt").text
    assert "\n2.jpg#xywh=0,0,64,48" in two and "3.jpg" not in two  # 15 or 16 tiles, 6 a sheet: 3 sheets


@pytest.mark.parametrize("chain,text", [
    ("0.1/5x3/64x0/0.jpg", "'0.1' is not seconds between tiles (0.5 to 3600)"),
    ("2/11x10/64x0/0.jpg", "'11x10' is not COLSxROWS (at most 100 tiles)"),
    ("2/5x3/0x0/0.jpg", "'0x0' is not a tile size WxH"),
    ("2/5x3/641x0/0.jpg", "'641x0' is not a tile size WxH"),
    ("2/5x3/64x0/00.jpg", "'00.jpg' is not N.jpg"),
    ("2/5x3/64x0", "a sprite is EVERY/COLSxROWS/WxH/N.jpg"),
])
def test_sprite_refusals(stack, chain, text):
    r = _get(stack, f"/v.mp4/sprite/{chain}")
    assert r.status_code == 400 and text in r.text, (r.status_code, r.text)


def test_results_are_kept_no_longer_than_their_source(make_stack, videos):
    """The worker passes on the source's Cache-Control: a playlist of a
    no-store video is not stored, one of a max-age=60 video is stored for
    60 s, and clients see the source's freshness."""
    ctl = harness.ControlledOrigin(videos)
    try:
        ctl.httpd.file_headers["/v.mp4"] = {"Cache-Control": "no-store"}
        ctl.httpd.file_headers["/late.mp4"] = {"Cache-Control": "max-age=60"}
        st = make_stack([{"name": "web.test", "default": True, "origin": ctl.url, "cache": {"enable": True}}],
                        workers=0, video_workers=1)
        for _ in range(2):
            r = st.get("/v.mp4/mp4hls/index.m3u8", host="web.test", timeout=60)
            assert r.status_code == 200 and r.headers.get("Cache-Control") == "no-store", dict(r.headers)
            assert "hit" not in r.headers.get("Cache-Status", ""), r.headers.get("Cache-Status")
        first = st.get("/late.mp4/thumbnail/3", host="web.test", timeout=60)
        assert first.status_code == 200 and first.headers.get("Cache-Control") == "max-age=60"
        assert "stored; ttl=60" in first.headers.get("Cache-Status", ""), first.headers.get("Cache-Status")
        again = st.get("/late.mp4/thumbnail/3", host="web.test", timeout=60)
        assert again.headers.get("Cache-Status", "").startswith("refract; hit"), again.headers.get("Cache-Status")
    finally:
        ctl.close()


@pytest.mark.parametrize("path", ["/v.mp4/mp4hls/seg-1.ts", "/v.mp4?trimming=11-13", "/v.mp4/thumbnail/4"])
def test_results_have_an_etag_of_their_bytes(stack, path):
    """Every video result carries an ETag (a hash of its bytes: a trim by
    reference, a segment, a thumbnail); If-None-Match with it is 304, made
    again or not, and If-Range with it keeps a range."""
    r = _get(stack, path)
    etag = r.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{16}"', etag), etag
    assert _get(stack, path).headers["ETag"] == etag  # made again (cache off): the same bytes
    nm = _get(stack, path, headers={"If-None-Match": etag})
    assert nm.status_code == 304 and nm.content == b""
    part = _get(stack, path, headers={"Range": "bytes=0-99", "If-Range": etag})
    assert part.status_code == 206 and part.content == r.content[:100]


def test_file_source_results_carry_its_last_modified(stack, videos):
    r = _get(stack, "/v.mp4/thumbnail/4")
    mtime = os.path.getmtime(os.path.join(videos, "v.mp4"))
    assert r.headers["Last-Modified"] == email.utils.formatdate(mtime, usegmt=True)


@pytest.mark.parametrize("host", ["vod.test", "web.test"])
def test_seed_form_trimming_then_hls(stack, tmp_path, host):
    """/video.mp4?trimming=17-20,30-40/mp4hls/index.m3u8 as seed 002 writes
    it: HLS of the trimmed video; the playlist's URIs resolve under the
    same query; ffmpeg plays it through the gateway."""
    base = "/v.mp4?trimming=2-6,20-24"
    r = _get(stack, base + "/mp4hls/index.m3u8", host=host)
    assert r.status_code == 200, r.text
    _, _, segs, ended = _playlist(r.text)
    assert ended and abs(sum(d for d, _ in segs) - 8.0) < 0.05, r.text
    assert segs[0][1] == "v.mp4?trimming=2-6,20-24/mp4hls/seg-0.ts"
    seg = _get(stack, "/" + segs[-1][1], host=host)
    assert seg.status_code == 200 and seg.headers["Content-Type"] == "video/mp2t"
    out = tmp_path / "played.mp4"
    run = subprocess.run(["ffmpeg", "-v", "error", "-y", "-headers", f"Host: {host}\r\n", "-i",
                          stack.url(base + "/mp4hls/index.m3u8"), "-c", "copy", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert abs(float(_probe(str(out), "-show_entries", "format=duration")["format"]["duration"]) - 8) < 0.2


def test_hls_of_a_trim_on_a_single_slot_worker(make_stack, videos):
    """One worker with one job slot: HLS of a trim must not wait for a
    second job (the worker trims the source itself), and a refused trim is
    the trim's 400."""
    st = make_stack([{"name": "vod.test", "default": True, "origin": "file://" + videos}], workers=0,
                    video_workers=1, video_worker={"jobs": 1}, vhost_defaults={"cache": {"enable": False}})
    t0 = time.monotonic()
    r = st.get("/v.mp4?trimming=2-6/mp4hls/index.m3u8", host="vod.test", timeout=60)
    assert r.status_code == 200, r.text
    assert time.monotonic() - t0 < 10
    _, _, segs, _ = _playlist(r.text)
    assert abs(sum(d for d, _ in segs) - 4.0) < 0.05
    s = st.get("/" + segs[0][1], host="vod.test", timeout=60)
    assert s.status_code == 200 and s.headers["Content-Type"] == "video/mp2t"
    bad = st.get("/v.mp4?trimming=40-50/mp4hls/index.m3u8", host="vod.test", timeout=60)
    assert bad.status_code == 400 and "past the end of the source" in bad.text, bad.text
    # not a trimming query: not an mp4hls URL either (a page's ?src=…/mp4hls/… stays a page)
    page = st.get("/v.mp4?src=/v.mp4/mp4hls/index.m3u8", host="vod.test", timeout=60)
    with open(os.path.join(videos, "v.mp4"), "rb") as f:
        assert page.status_code == 200 and page.content == f.read()


def test_thumbnail_piped_through_a_dims_chain(make_stack, videos, tmp_path):
    """/v.mp4/thumbnail/T/dims/CHAIN: the video worker's frame becomes the
    image worker's source (a second job), and the answer is the chain's."""
    st = make_stack([{"name": "vod.test", "default": True, "origin": "file://" + videos}], workers=1,
                    video_workers=1, vhost_defaults={"cache": {"enable": False}})
    r = st.get("/v.mp4/thumbnail/10/dims/resize/100x100/format/png", host="vod.test", timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "image/png"
    info = harness.image_info(r.content, str(tmp_path))
    assert (info["width"], info["height"]) == (100, 75)
    ours = tmp_path / "piped.png"
    ours.write_bytes(r.content)
    ref = tmp_path / "ref10s.png"
    _ffmpeg(["-ss", "10", "-i", os.path.join(videos, "v.mp4"), "-frames:v", "1", "-vf", "scale=100:75"], str(ref))
    ref2 = tmp_path / "ref12s.png"
    _ffmpeg(["-ss", "12", "-i", os.path.join(videos, "v.mp4"), "-frames:v", "1", "-vf", "scale=100:75"], str(ref2))
    assert _psnr(ours, ref) > _psnr(ours, ref2) + 3  # the frame at 10 s, resized
    grey = st.get("/v.mp4/thumbnail/10/160x0/dims/grayscale", host="vod.test", timeout=60)
    assert grey.status_code == 200 and grey.headers["Content-Type"] == "image/jpeg"
    assert harness.image_info(grey.content, str(tmp_path))["width"] == 160
    bad = st.get("/v.mp4/thumbnail/10/dims/rotate/45", host="vod.test", timeout=60)
    assert bad.status_code == 400 and "rotate: '45' is not 90, 180 or 270" in bad.text, bad.text


def test_sprites_switch_apart_from_thumbnails(stack):
    """thumbnail.sprites: false: sprite URLs are plain paths (the origin has no such file),
    thumbnails still work."""
    assert _get(stack, "/v.mp4/sprite/2/5x2/64x0/sprite.vtt").status_code == 200
    off = _get(stack, "/v.mp4/sprite/2/5x2/64x0/sprite.vtt", host="nom4a.test")
    assert off.status_code == 404 and "not found" in off.text, off.text
    assert _get(stack, "/v.mp4/thumbnail/4", host="nom4a.test").status_code == 200
