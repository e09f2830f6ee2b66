"""mp4hls in fMP4 (CMAF): HEVC and the other codecs MPEG-TS does not carry
become an init section (init.mp4, named by #EXT-X-MAP) and seg-N.m4s
fragments; a vhost with mp4hls.fmp4 gets fMP4 for H.264/AAC too. Checked
with ffprobe (codecs, every frame on the source's times + 10 s, EXTINFs
against each fragment's duration) and by ffmpeg's HLS demuxer playing the
playlist through the gateway. hls.js plays fMP4 in
test_hls_browser.py."""
import os
import re
import subprocess

import pytest

import harness
from test_video import _ffmpeg, _probe

DUR = 12
FPS = 25


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("fmp4_videos"))
    src = ["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={FPS}:duration={DUR}", "-f", "lavfi", "-i",
           f"sine=frequency=440:duration={DUR}"]
    # x265's defaults: open groups of pictures (CRA with leading pictures), B-frames
    _ffmpeg(src + ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=50",
                   "-c:a", "aac", "-movflags", "+faststart"], os.path.join(d, "hevc.mp4"))
    _ffmpeg(src + ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:keyint=50",
                   "-c:a", "aac"], os.path.join(d, "hevc_late.mp4"))  # moov after the mdat
    _ffmpeg(src + ["-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-c:a", "libopus", "-b:a", "48k",
                   "-movflags", "+faststart"], os.path.join(d, "opus.mp4"))
    _ffmpeg(src + ["-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-c:a", "aac", "-movflags", "+faststart"],
            os.path.join(d, "avc.mp4"))
    _ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size=160x120:rate={FPS}:duration=2", "-c:v", "mpeg4"],
            os.path.join(d, "mp4v.mp4"))
    # fragmented sources (samples in moof boxes), as ffmpeg and refract's streamed transcodes write them;
    # one with a global sidx before its first moof
    frag = ["-movflags", "+frag_keyframe+empty_moov+default_base_moof"]
    _ffmpeg(src + ["-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-c:a", "aac"] + frag,
            os.path.join(d, "frag.mp4"))
    _ffmpeg(["-i", os.path.join(d, "frag.mp4"), "-c", "copy", "-movflags",
             "+frag_keyframe+empty_moov+default_base_moof+global_sidx"], os.path.join(d, "fragsidx.mp4"))
    _ffmpeg(["-i", os.path.join(d, "hevc.mp4"), "-c", "copy", "-tag:v", "hvc1"] + frag, os.path.join(d, "fraghevc.mp4"))
    return d


@pytest.fixture(scope="module")
def stack(tmp_path_factory, videos):
    origin = harness.Origin(videos)
    st = harness.Stack(
        str(tmp_path_factory.mktemp("fmp4")),
        vhosts=[
            {"name": "vod.test", "default": True, "origin": "file://" + videos, "mp4hls": {"duration": 4}},
            {"name": "web.test", "origin": origin.url, "mp4hls": {"duration": 4}},
            {"name": "cmaf.test", "origin": "file://" + videos, "mp4hls": {"duration": 4, "fmp4": True}},
        ],
        vhost_defaults={"cache": {"enable": False}},
        workers=0,
        video_workers=1,
        video_worker={"jobs": 2, "read_ahead": "64KB"},
    )
    st.origin = origin
    yield st
    st.close()
    origin.close()


def _get(st, path, host="vod.test"):
    return st.get(path, host=host, timeout=60)


def _frame_times(path):
    info = _probe(path, "-select_streams", "v", "-show_entries", "frame=pts_time")
    return sorted(round(float(f["pts_time"]), 3) for f in info["frames"] if "pts_time" in f)


def _fetch_all(st, host, name, tmp_path):
    """The playlist, init.mp4 and every segment, fetched last first (each is
    made on its own); (playlist text, [EXTINF], joined file path)."""
    r = _get(st, f"/{name}/mp4hls/index.m3u8", host=host)
    assert r.status_code == 200, r.text
    text = r.text
    assert re.search(r"#EXT-X-VERSION:[67]\n", text), text
    assert '\n#EXT-X-MAP:URI="init.mp4"\n' in text, text
    extinf = [float(x) for x in re.findall(r"#EXTINF:([\d.]+),", text)]
    uris = [u for u in text.split("\n") if u and not u.startswith("#")]
    assert uris == [f"seg-{i}.m4s" for i in range(len(uris))], uris
    init = _get(st, f"/{name}/mp4hls/init.mp4", host=host)
    assert init.status_code == 200 and init.headers["Content-Type"] == "video/mp4", init.text
    assert init.content[4:8] == b"ftyp" and b"moof" not in init.content
    parts = {}
    for i in reversed(range(len(uris))):
        s = _get(st, f"/{name}/mp4hls/{uris[i]}", host=host)
        assert s.status_code == 200 and s.headers["Content-Type"] == "video/mp4", s.text
        assert s.content[4:8] == b"moof", s.content[:16]
        parts[i] = s.content
        one = tmp_path / f"{name}-one-{i}.mp4"
        one.write_bytes(init.content + s.content)
        # each segment's frames span its EXTINF, within a frame
        t = _frame_times(str(one))
        assert abs(len(t) / FPS - extinf[i]) <= 1.0 / FPS + 1e-6, (i, len(t), extinf[i])
    joined = tmp_path / f"{name}-all.mp4"
    joined.write_bytes(init.content + b"".join(parts[i] for i in range(len(uris))))
    return text, extinf, str(joined)


@pytest.mark.parametrize("host,name", [("vod.test", "hevc.mp4"), ("vod.test", "hevc_late.mp4"),
                                       ("web.test", "hevc.mp4"), ("vod.test", "opus.mp4"),
                                       ("cmaf.test", "avc.mp4"), ("vod.test", "fraghevc.mp4"),
                                       ("web.test", "fraghevc.mp4")])
def test_fmp4_segments_are_the_source(stack, videos, tmp_path, host, name):
    text, extinf, joined = _fetch_all(stack, host, name, tmp_path)
    assert abs(sum(extinf) - DUR) < 0.05, extinf
    assert int(re.search(r"#EXT-X-TARGETDURATION:(\d+)", text).group(1)) >= max(extinf)
    codecs = {s["codec_type"]: (s["codec_name"], s["codec_tag_string"])
              for s in _probe(joined, "-show_entries", "stream=codec_type,codec_name,codec_tag_string")["streams"]}
    want = {"hevc.mp4": ("hevc", "hvc1"), "hevc_late.mp4": ("hevc", "hvc1"), "opus.mp4": ("h264", "avc1"),
            "avc.mp4": ("h264", "avc1"), "fraghevc.mp4": ("hevc", "hvc1")}[name]
    assert codecs["video"] == want, codecs
    assert codecs["audio"][0] == ("opus" if name == "opus.mp4" else "aac"), codecs
    # every frame of the source, on its times + 10 s (VID_TS_OFFSET_S), none lost at the joins
    src = [round(t + 10, 3) for t in _frame_times(os.path.join(videos, name))]
    assert _frame_times(joined) == src
    run = subprocess.run(["ffmpeg", "-v", "error", "-i", joined, "-f", "null", "-"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_ffmpeg_plays_fmp4_hls_through_the_gateway(stack, tmp_path):
    out = tmp_path / "played.mkv"
    run = subprocess.run(["ffmpeg", "-v", "error", "-y", "-headers", "Host: web.test\r\n", "-i",
                          stack.url("/hevc.mp4/mp4hls/index.m3u8"), "-c", "copy", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    info = _probe(str(out), "-count_packets", "-show_entries", "stream=codec_name,nb_read_packets")
    frames = {s["codec_name"]: int(s["nb_read_packets"]) for s in info["streams"]}
    assert frames["hevc"] == DUR * FPS, frames


@pytest.mark.parametrize("name", ["frag.mp4", "fragsidx.mp4"])
def test_fragmented_sources_play(stack, videos, tmp_path, name):
    """A fragmented H.264/AAC MP4 (with or without a sidx) is segmented like
    any MP4: ffmpeg's HLS demuxer reads the playlist and its MPEG-TS
    segments through the gateway (an http origin, read by ranges) with no
    error and gets every packet of the source."""
    r = _get(stack, f"/{name}/mp4hls/index.m3u8", host="web.test")
    assert r.status_code == 200 and "\nseg-0.ts\n" in r.text, r.text
    extinf = [float(x) for x in re.findall(r"#EXTINF:([\d.]+),", r.text)]
    assert len(extinf) == 3 and abs(sum(extinf) - DUR) < 0.1, r.text
    out = tmp_path / "played.mkv"
    run = subprocess.run(["ffmpeg", "-v", "error", "-y", "-headers", "Host: web.test\r\n", "-i",
                          stack.url(f"/{name}/mp4hls/index.m3u8"), "-c", "copy", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stderr == "", run.stderr

    def packets(path):
        info = _probe(path, "-count_packets", "-show_entries", "stream=codec_name,nb_read_packets")
        return {s["codec_name"]: int(s["nb_read_packets"]) for s in info["streams"]}
    assert packets(str(out)) == packets(os.path.join(videos, name))
    run = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out), "-f", "null", "-"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_mpegts_stays_for_h264_aac(stack):
    r = _get(stack, "/avc.mp4/mp4hls/index.m3u8")
    assert r.status_code == 200 and "EXT-X-MAP" not in r.text and "\nseg-0.ts\n" in r.text, r.text


@pytest.mark.parametrize("host,path,status,text", [
    ("vod.test", "/hevc.mp4/mp4hls/seg-0.ts", 404, "this video's HLS is fMP4: its segments are seg-N.m4s"),
    ("vod.test", "/avc.mp4/mp4hls/seg-0.m4s", 404, "this video's HLS is MPEG-TS: its segments are seg-N.ts"),
    ("vod.test", "/avc.mp4/mp4hls/init.mp4", 404, "(no init section)"),
    ("cmaf.test", "/avc.mp4/mp4hls/seg-0.ts", 404, "this video's HLS is fMP4"),
    ("vod.test", "/hevc.mp4/mp4hls/seg-3.m4s", 404, "no segment 3: the video has 3"),
    ("vod.test", "/hevc.mp4/mp4hls/init.m4s", 400, "is not index.m3u8, seg-N.ts, init.mp4 or seg-N.m4s"),
    ("vod.test", "/mp4v.mp4/mp4hls/index.m3u8", 415, "unsupported video codec mpeg4"),
])
def test_refusals(stack, host, path, status, text):
    r = _get(stack, path, host=host)
    assert r.status_code == status, (r.status_code, r.text)
    assert text in r.text and r.text.count("\n") == 1, r.text
