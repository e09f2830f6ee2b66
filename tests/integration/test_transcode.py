"""Transcoding on the fly (seed 002 ch. 3, real-time transcoding: wmv/mov
to mp4): /v.EXT/mp4[/HEIGHTp] makes an H.264/AAC MP4 (moov first) of any
container and codecs libavformat and libavcodec read, for the extensions a
vhost lists — fragmented and sent while it is made (transcode.stream, on by
default; test_transcode_stream.py). Outputs are checked with ffprobe."""
import json
import os
import subprocess

import pytest

import harness

DUR = 4


def _ffmpeg(args, out):
    subprocess.run(["ffmpeg", "-v", "error", "-y"] + args + [out], check=True, timeout=120)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tx"))
    v = ["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={DUR}"]
    a = ["-f", "lavfi", "-i", f"sine=frequency=440:duration={DUR}"]
    _ffmpeg(v + a + ["-c:v", "libvpx-vp9", "-b:v", "300k", "-deadline", "realtime", "-cpu-used", "8", "-c:a",
                     "libopus"], os.path.join(d, "v.webm"))
    _ffmpeg(v + a + ["-c:v", "mpeg4", "-c:a", "libmp3lame"], os.path.join(d, "v.avi"))
    _ffmpeg(v + a + ["-c:v", "wmv2", "-c:a", "wmav2"], os.path.join(d, "v.wmv"))
    _ffmpeg(v + a + ["-c:v", "libx264", "-c:a", "aac"], os.path.join(d, "v.mkv"))
    _ffmpeg(v + ["-c:v", "mpeg2video"], os.path.join(d, "silent.ts"))  # no audio
    _ffmpeg(a + ["-c:a", "aac"], os.path.join(d, "a.m4a"))
    with open(os.path.join(d, "text.mkv"), "w") as f:
        f.write("not a video\n" * 50)
    return d


@pytest.fixture(scope="module")
def stack(tmp_path_factory, sources):
    work = str(tmp_path_factory.mktemp("tx-stack"))
    st = harness.Stack(
        work,
        vhosts=[{"name": "vod.test", "default": True, "origin": "file://" + sources},
                {"name": "narrow.test", "origin": "file://" + sources,
                 "transcode": {"inputs": "wmv", "max_height": 180, "max_duration": 2}},
                {"name": "ladder.test", "origin": "file://" + sources,
                 "transcode": {"max_height": 720, "ladder": ["720p@1500k", "180p@60k"]}}],
        bus={"spool_dir": os.path.join(work, "spool"), "job_timeout": "60s"},
        vhost_defaults={"cache": {"enable": False}},
        workers=0,
        video_workers=1,
        video_worker={"jobs": 1},
    )
    yield st
    st.close()


def _probe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_entries",
                          "format=duration:stream=codec_name,codec_type,width,height,nb_read_frames", "-count_frames", path],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("name,audio", [("v.webm", True), ("v.avi", True), ("v.wmv", True), ("v.mkv", True),
                                        ("silent.ts", False)])
def test_any_container_becomes_h264_aac_mp4(stack, tmp_path, name, audio):
    r = stack.get(f"/{name}/mp4", host="vod.test", timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "video/mp4"
    p = tmp_path / "out.mp4"
    p.write_bytes(r.content)
    info = _probe(str(p))
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
    assert abs(int(streams["video"]["nb_read_frames"]) - DUR * 25) <= 2
    assert ("audio" in streams) == audio
    if audio:
        assert streams["audio"]["codec_name"] == "aac"
    assert abs(float(info["format"]["duration"]) - DUR) < 0.3
    assert r.content.find(b"moov") < r.content.find(b"mdat")  # the moov first
    assert b"moof" in r.content and "Content-Length" not in r.headers  # streamed as made


def test_height_option_and_vhost_rules(stack, tmp_path):
    r = stack.get("/v.avi/mp4/120p", host="vod.test", timeout=120)
    assert r.status_code == 200, r.text
    p = tmp_path / "small.mp4"
    p.write_bytes(r.content)
    v = [s for s in _probe(str(p))["streams"] if s["codec_type"] == "video"][0]
    assert (v["width"], v["height"]) == (160, 120)
    # narrow.test transcodes .wmv only, at most 180p, at most 2 s long
    assert stack.get("/v.avi/mp4", host="narrow.test", timeout=60).status_code == 404  # a plain request for "/v.avi/mp4"
    long = stack.get("/v.wmv/mp4", host="narrow.test", timeout=60)
    assert long.status_code == 413 and "more than 2.000 s" in long.text, long.text
    assert stack.get("/v.wmv/mp4/720p", host="narrow.test", timeout=60).status_code == 400


@pytest.mark.parametrize("path,status,text", [
    ("/text.mkv/mp4", 415, "not a video container this worker transcodes"),
    ("/a.m4a/mp4", None, None),  # m4a is not in the default inputs: a plain request
    ("/missing.mkv/mp4", 404, None),
    ("/v.mkv/mp4/abc", 400, "'abc' is not a height such as 720p"),
])
def test_transcode_refusals(stack, path, status, text):
    r = stack.get(path, host="vod.test", timeout=60)
    if status is None:
        assert r.status_code == 404  # "/a.m4a/mp4" is no file
        return
    assert r.status_code == status, (r.status_code, r.text)
    if text:
        assert text in r.text, r.text


def test_ladder(stack, tmp_path):
    """transcode.ladder: /mp4/Hp must name a rung, whose kbps caps the
    video; /mp4 alone is the highest rung the source reaches (the 240-high
    source reaches only 180p)."""
    sizes = {}
    for path, size in (("/v.mkv/mp4", (240, 180)), ("/v.mkv/mp4/180p", (240, 180)), ("/v.mkv/mp4/720p", (320, 240))):
        r = stack.get(path, host="ladder.test", timeout=120)
        assert r.status_code == 200, (path, r.text)
        p = tmp_path / "ladder.mp4"
        p.write_bytes(r.content)
        v = [s for s in _probe(str(p))["streams"] if s["codec_type"] == "video"][0]
        assert (v["width"], v["height"]) == size, path
        sizes[path] = len(r.content)
    # the 180p rung's 60 kbit/s cap: 4 s of video in well under 60 kB, where CRF 23 alone takes more
    crf_only = stack.get("/v.mkv/mp4/180p", host="vod.test", timeout=120)
    assert crf_only.status_code == 200
    assert sizes["/v.mkv/mp4/180p"] < 0.7 * len(crf_only.content), (sizes, len(crf_only.content))
    bad = stack.get("/v.mkv/mp4/480p", host="ladder.test", timeout=60)
    assert bad.status_code == 400 and "480p is not on this vhost's ladder (720p, 180p)" in bad.text, bad.text
