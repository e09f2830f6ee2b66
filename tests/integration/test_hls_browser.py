"""mp4hls played by a real browser: hls.js (npm hls.js) in Debian's headless
Chromium, driven by playwright-core (tests/browser/play_hls.mjs), plays
/v.mp4/mp4hls/index.m3u8 from the gateway until N seconds have played with
no error event (hls.js ERROR, fatal or not, or video.error).

The page (tests/browser/player.html) and hls.min.js are copied into the
vhost's file:// origin beside the videos, so the page, the playlist and the
segments share one origin (no CORS). Chromium sends Host: 127.0.0.1:PORT,
so that vhost is the default one.

The page starts hls.js at 0.001 s, not 0 (see player.html): the media's
first buffered time is 0.08 s (B-frames' composition delay; 0.023 s of AAC
priming without B-frames), and from a VOD start of 0 hls.js seeks over that
hole with a non-fatal bufferSeekOverHole ERROR, for ffmpeg's own HLS
segments of the same MP4 as well. From just past 0 it starts at the
buffer's start instead when the gap is under 0.25 s, with no event; the
tests bound that gap (startGap) separately.

Chromium is installed by scripts/deps.sh (make test); without it this test
fails rather than skips. tests/browser/node_modules is made by `npm ci`
from the committed package-lock.json when missing or stale."""
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse

import pytest

import harness

DUR = 24  # seconds of each test video: segments of 10, 10 and 4 s
PLAY = 12  # seconds hls.js must play: across the seg-0/seg-1 boundary
BROWSER_DIR = os.path.join(harness.REPO, "tests", "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _installed_version(pkg):
    try:
        with open(os.path.join(BROWSER_DIR, "node_modules", pkg, "package.json")) as f:
            return json.load(f).get("version")
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def node():
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} missing: scripts/deps.sh installs Debian's chromium"
    node = shutil.which("node")
    assert node, "node (Node.js) missing"
    with open(os.path.join(BROWSER_DIR, "package.json")) as f:
        pins = json.load(f)["dependencies"]
    if any(_installed_version(p) != v for p, v in pins.items()):
        npm = shutil.which("npm")
        assert npm, "npm missing: cannot install tests/browser's packages"
        run = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=BROWSER_DIR,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"npm ci in {BROWSER_DIR} failed:\n{run.stdout}\n{run.stderr}"
        bad = {p: _installed_version(p) for p, v in pins.items() if _installed_version(p) != v}
        assert not bad, f"after npm ci: {bad}, wanted {pins}"
    return node


def _top_boxes(path):
    """The MP4's top-level box types, in file order."""
    types = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos + 8 <= size:
            f.seek(pos)
            hdr = f.read(16)
            n = int.from_bytes(hdr[:4], "big")
            if n == 1:
                n = int.from_bytes(hdr[8:16], "big")
            types.append(hdr[4:8].decode("latin-1"))
            if n < 8:
                break
            pos += n
    return types


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The file:// origin: the videos, the player page and hls.min.js."""
    d = str(tmp_path_factory.mktemp("hls_site"))
    v = os.path.join(d, "v.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={DUR}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:duration={DUR}",
                    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                    "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
                    "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", v], check=True, timeout=120)
    # the same streams with the moov after the mdat
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", v, "-c", "copy", os.path.join(d, "late.mp4")], check=True,
                   timeout=60)
    # and fragmented (samples in moof boxes), as ffmpeg and refract's streamed transcodes write it
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", v, "-c", "copy", "-movflags",
                    "+frag_keyframe+empty_moov+default_base_moof", os.path.join(d, "frag.mp4")], check=True,
                   timeout=60)
    boxes = {n: _top_boxes(os.path.join(d, n)) for n in ("v.mp4", "late.mp4", "frag.mp4")}
    assert "moof" in boxes["frag.mp4"], boxes
    assert boxes["v.mp4"].index("moov") < boxes["v.mp4"].index("mdat"), boxes
    assert boxes["late.mp4"].index("moov") > boxes["late.mp4"].index("mdat"), boxes
    shutil.copy(os.path.join(BROWSER_DIR, "player.html"), os.path.join(d, "player.html"))
    # a static playlist whose second segment the gateway refuses (404: the video has 3)
    with open(os.path.join(d, "broken.m3u8"), "w") as f:
        f.write("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
                "#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:10.000,\n/v.mp4/mp4hls/seg-0.ts\n"
                "#EXTINF:10.000,\n/v.mp4/mp4hls/seg-9.ts\n#EXT-X-ENDLIST\n")
    return d


@pytest.fixture(scope="module")
def stack(tmp_path_factory, site, node):
    shutil.copy(os.path.join(BROWSER_DIR, "node_modules", "hls.js", "dist", "hls.min.js"),
                os.path.join(site, "hls.min.js"))
    st = harness.Stack(
        str(tmp_path_factory.mktemp("hls_browser")),
        vhosts=[{"name": "vod.test", "default": True, "origin": "file://" + site},
                # the page loaded from http://localhost:PORT: Chromium sends Host: localhost:PORT
                {"name": "localhost", "origin": "file://" + site, "mp4hls": {"fmp4": True}}],
        vhost_defaults={"cache": {"enable": False}},
        workers=0,
        video_workers=1,
        video_worker={"jobs": 2},
    )
    yield st
    st.close()


def _play(node, st, playlist, seconds=PLAY, timeout=None, host="127.0.0.1", param="src"):
    """Runs play_hls.mjs on player.html?src=PLAYLIST (or ?mp4=URL: the
    <video> plays it alone), the page loaded from http://HOST:PORT; (exit
    code, result)."""
    page = st.url(f"/player.html?{param}=" + playlist).replace("127.0.0.1", host, 1)
    timeout = timeout or seconds + 30
    proc = subprocess.Popen([node, os.path.join(BROWSER_DIR, "play_hls.mjs"), page, str(seconds), str(timeout)],
                            cwd=BROWSER_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    t0 = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout + 20)
    finally:
        if proc.poll() is None:  # timed out, or the test's deadline: take Chromium down with it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    lines = out.strip().splitlines()
    assert lines, f"play_hls.mjs printed nothing (exit {proc.returncode}):\n{err}"
    res = json.loads(lines[-1])
    res["stderr"] = err[-2000:]
    harness.MEASUREMENTS.append(
        f"hls.js {playlist}: played {res.get('played', 0):.2f}s, {res.get('fragsLoaded')} frags, "
        f"{res.get('decodedFrames')} frames decoded ({res.get('droppedFrames')} dropped), "
        f"{len(res.get('errors', []))} errors, {time.monotonic() - t0:.1f}s wall")
    return proc.returncode, res


@pytest.mark.timeout_s(90)
@pytest.mark.parametrize("name", ["v.mp4", "late.mp4", "frag.mp4"])
def test_hlsjs_plays_mp4hls_in_chromium(node, stack, name):
    rc, res = _play(node, stack, f"/{name}/mp4hls/index.m3u8")
    assert rc == 0 and res["ok"], json.dumps(res, indent=1)
    assert res["errors"] == [] and res["videoError"] is None
    assert res["played"] >= PLAY
    # hls.js starts at the buffer's start (see player.html): the first video
    # frame's composition delay, 2 frames at 25 fps with x264's B-frames
    assert res["startGap"] is not None and res["startGap"] < 0.1, res["startGap"]
    assert res["hlsVersion"] and res["supported"] and res["manifestParsed"] and res["levels"] == 1
    assert abs(res["duration"] - DUR) < 0.5, res["duration"]
    assert (res["videoWidth"], res["videoHeight"]) == (640, 360)
    # PLAY seconds span seg-0 and seg-1 (10 s each)
    assert res["fragsLoaded"] >= 2
    sns = {f["sn"] for f in res["frags"]}
    assert {0, 1} <= sns, res["frags"]
    assert all(f["url"].endswith(f"/{name}/mp4hls/seg-{f['sn']}.ts") for f in res["frags"]), res["frags"]
    assert res["decodedFrames"] >= (PLAY - 1) * 25, res["decodedFrames"]
    assert res["failedRequests"] == [], res["failedRequests"]


@pytest.mark.timeout_s(60)
def test_broken_playlist_url_is_an_error(node, stack):
    """The harness can fail: a playlist the gateway 404s is an hls.js error."""
    rc, res = _play(node, stack, "/nope.mp4/mp4hls/index.m3u8", timeout=20)
    assert rc != 0 and not res["ok"], json.dumps(res, indent=1)
    assert not res["timedOut"], json.dumps(res, indent=1)
    hls = [e for e in res["errors"] if e.get("source") == "hls"]
    assert hls and hls[0]["details"] == "manifestLoadError" and hls[0]["fatal"] and hls[0]["code"] == 404, res
    assert res["played"] == 0


@pytest.mark.timeout_s(60)
def test_refused_segment_is_an_error(node, stack):
    """The harness fails on a segment too: seg-9 of a 3-segment video is a
    404, which hls.js reports while seg-0 plays."""
    rc, res = _play(node, stack, "/broken.m3u8", timeout=20)
    assert rc != 0 and not res["ok"] and not res["timedOut"], json.dumps(res, indent=1)
    hls = [e for e in res["errors"] if e.get("source") == "hls"]
    assert hls and hls[0]["details"] == "fragLoadError" and hls[0]["code"] == 404, res
    assert hls[0]["url"].endswith("/v.mp4/mp4hls/seg-9.ts"), res


@pytest.mark.timeout_s(90)
def test_hlsjs_plays_hls_of_a_frame_accurate_trim(node, stack):
    """The seed's /v.mp4?trimming=…/mp4hls/index.m3u8 with cuts off the
    keyframes: the trim's re-encoded stretches carry parameter sets of
    their own (a second SPS/PPS id in the avcC, in-band before each IDR in
    the TS), and hls.js in Chromium plays across both joins and a segment
    boundary with no error."""
    trim = "1.5-7.3,12.3-20.1"  # 5.8 s + 7.8 s, each end inside a 2 s group
    playlist = urllib.parse.quote(f"/v.mp4?trimming={trim}/mp4hls/index.m3u8", safe="/")
    rc, res = _play(node, stack, playlist)
    assert rc == 0 and res["ok"], json.dumps(res, indent=1)
    assert res["errors"] == [] and res["videoError"] is None
    assert res["played"] >= PLAY
    assert abs(res["duration"] - 13.6) < 0.3, res["duration"]
    assert res["fragsLoaded"] >= 2 and {0, 1} <= {f["sn"] for f in res["frags"]}, res["frags"]
    assert res["decodedFrames"] >= (PLAY - 1) * 25, res["decodedFrames"]
    assert res["failedRequests"] == [], res["failedRequests"]


@pytest.mark.timeout_s(120)
def test_hlsjs_plays_progressive_hls_in_chromium(node, stack):
    """Progressive HLS (/v.mp4/hls/index.m3u8, the master playlist of the
    vhost's ladder): every segment hls.js asks for is transcoded then, on
    its own, and hls.js plays across the segment joins (6 s each) with no
    error: the segments' timestamps and AAC frames are one timeline."""
    rc, res = _play(node, stack, "/v.mp4/hls/index.m3u8")
    assert rc == 0 and res["ok"], json.dumps(res, indent=1)
    assert res["errors"] == [] and res["videoError"] is None
    assert res["played"] >= PLAY
    assert res["levels"] == 1  # 640x360: the 360p rung only
    assert abs(res["duration"] - DUR) < 0.5, res["duration"]
    assert (res["videoWidth"], res["videoHeight"]) == (640, 360)
    assert {0, 1, 2} <= {f["sn"] for f in res["frags"]}, res["frags"]
    assert all(f["url"].endswith(f"/v.mp4/hls/360p/seg-{f['sn']}.ts") for f in res["frags"]), res["frags"]
    assert res["decodedFrames"] >= (PLAY - 1) * 25, res["decodedFrames"]
    assert res["failedRequests"] == [], res["failedRequests"]


@pytest.mark.timeout_s(90)
def test_hlsjs_plays_fmp4_hls_in_chromium(node, stack):
    """mp4hls in fMP4 (a vhost with mp4hls.fmp4): hls.js loads init.mp4
    (EXT-X-MAP) once, then seg-N.m4s fragments, each made on its own with
    the source's times + 10 s in its tfdt, and plays across their joins
    with no error. (HEVC, the reason fMP4 exists here, has no decoder in
    this Chromium: the same fragments are checked by ffprobe in
    test_hls_fmp4.py.)"""
    rc, res = _play(node, stack, "/v.mp4/mp4hls/index.m3u8", host="localhost")
    assert rc == 0 and res["ok"], json.dumps(res, indent=1)
    assert res["errors"] == [] and res["videoError"] is None
    assert res["played"] >= PLAY
    assert res["startGap"] is not None and res["startGap"] < 0.1, res["startGap"]
    assert abs(res["duration"] - DUR) < 0.5, res["duration"]
    assert (res["videoWidth"], res["videoHeight"]) == (640, 360)
    assert {0, 1} <= {f["sn"] for f in res["frags"]}, res["frags"]
    assert all(f["url"].endswith(f"/v.mp4/mp4hls/seg-{f['sn']}.m4s") for f in res["frags"]), res["frags"]
    assert res["decodedFrames"] >= (PLAY - 1) * 25, res["decodedFrames"]
    assert res["failedRequests"] == [], res["failedRequests"]


@pytest.mark.timeout_s(150)
def test_chromium_plays_a_transcode_while_it_is_streamed(node, stack, site, make_stack, tmp_path):
    """/v.mp4/mp4 streamed as fragmented MP4 while the worker makes it
    (transcode.stream), played by Chromium's own <video> (no hls.js) for
    12 s with no error, at the transcode's size."""
    st = make_stack([{"name": "localhost", "default": True, "origin": "file://" + site,
                      "transcode": {"max_height": 360}}],
                    workers=0, video_workers=1, video_worker={"jobs": 1},
                    bus={"spool_dir": str(tmp_path / "spool"), "job_timeout": "120s"})
    rc, res = _play(node, st, "/v.mp4/mp4", host="localhost", param="mp4")
    assert rc == 0 and res["ok"], json.dumps(res, indent=1)
    assert res["errors"] == [] and res["videoError"] is None
    assert (res["videoWidth"], res["videoHeight"]) == (640, 360)
    log = st.gw.log()
    assert "/v.mp4/mp4 200" in log and "detail=streamed" in log, log[-2000:]
