"""Image operations through the stack (gateway -> bus -> image worker): a few
chains per operation, checked on the decoded answer. The exhaustive checks
are the worker's unit tests (tests/unit/test_img_core.c); the gateway's
parsing, format/auto, presets and byoriginal are in test_dims_gateway.py."""
import json
import os
import shutil
import subprocess
import time

import pytest

import harness
from harness import image_info, one_line, sha256, vips_field

FALLBACK = "X-Refract-Fallback"

# quad.png: 200x100, quadrants of these colours
QUADRANTS = "drawbox=x=100:y=0:w=100:h=50:color=lime:t=fill,drawbox=x=0:y=50:w=100:h=50:color=blue:t=fill," \
            "drawbox=x=100:y=50:w=100:h=50:color=yellow:t=fill"


def _ffmpeg(*args):
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True, timeout=60)


@pytest.fixture(scope="module")
def ops_media(tmp_path_factory, media):
    d = str(tmp_path_factory.mktemp("ops-media"))
    shutil.copy(media["photo.jpg"], os.path.join(d, "photo.jpg"))  # 2400x1600
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:s=200x100", "-vf", QUADRANTS, "-frames:v", "1",
            os.path.join(d, "quad.png"))
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=200x100:rate=10", "-frames:v", "6", os.path.join(d, "anim.gif"))
    subprocess.run(["vips", "copy", media["photo.jpg"], os.path.join(d, "photo.webp")], check=True, timeout=60)
    # left half opaque red, right half transparent over hidden green: a blur
    # must not bring the green out at the edge
    _ffmpeg("-f", "lavfi", "-i", "color=c=red@1:s=50x100,format=rgba", "-f", "lavfi", "-i",
            "color=c=0x00FF00@0:s=50x100,format=rgba", "-filter_complex", "[0][1]hstack,format=rgba", "-frames:v", "1",
            os.path.join(d, "edge.png"))
    # pure red in Display P3 (libvips' built-in profile, embedded): its numbers are a duller red
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x64", "-frames:v", "1", os.path.join(d, "red.png"))
    subprocess.run(["vips", "icc_transform", os.path.join(d, "red.png"), os.path.join(d, "redp3.png"), "p3"],
                   check=True, timeout=60)
    with open(media["photo.jpg"], "rb") as f:
        head = f.read(20 * 1024)
    with open(os.path.join(d, "trunc.jpg"), "wb") as f:  # a photo cut short: the header parses
        f.write(head)
    return d


@pytest.fixture(scope="module")
def stack(tmp_path_factory, ops_media):
    st = harness.Stack(
        str(tmp_path_factory.mktemp("image-ops")),
        vhosts=[{"name": "img.test", "default": True, "origin": "file://" + ops_media}],
        vhost_defaults={"cache": {"enable": False}},
        workers=1,
        image_worker={"jobs": 2},
    )
    yield st
    st.close()


def _get(st, path, tmp_path, status=200):
    r = st.get(path, timeout=30)
    assert r.status_code == status, f"{path}: {r.status_code} {r.text[:200]!r}"
    if status != 200:
        return r, None
    assert FALLBACK not in r.headers, r.headers[FALLBACK]
    return r, image_info(r.content, str(tmp_path))


def _save(content, tmp_path, name):
    path = os.path.join(str(tmp_path), f"{name}-{time.monotonic_ns()}")
    with open(path, "wb") as f:
        f.write(content)
    return path


def _pixel(path, x, y):
    r = subprocess.run(["vips", "getpoint", path, str(x), str(y)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [round(float(v)) for v in r.stdout.split()[:3]]


@pytest.mark.parametrize("chain,size,loader,ctype", [
    ("crop/300x200+100+100", (300, 200), "jpegload", "image/jpeg"),
    ("crop/300x200+2300+1500", (100, 100), "jpegload", "image/jpeg"),   # clipped to the image
    ("thumbnail/200x200/gravity/smart", (200, 200), "jpegload", "image/jpeg"),
    ("resize/500x500^", (750, 500), "jpegload", "image/jpeg"),
    ("resize/500x500!", (500, 500), "jpegload", "image/jpeg"),
    ("resize/4000x", (2400, 1600), "jpegload", "image/jpeg"),            # never enlarged
    ("resize/3000x<", (3000, 2000), "jpegload", "image/jpeg"),
    ("rotate/90/resize/x300", (200, 300), "jpegload", "image/jpeg"),
    ("flip/flop/sharpen/blur/1.5/resize/300", (300, 200), "jpegload", "image/jpeg"),
    ("extend/2600x1700/background/00ff00", (2600, 1700), "jpegload", "image/jpeg"),
    ("resize/300/format/avif", (300, 200), "heifload", "image/avif"),
    ("resize/300/format/gif", (300, 200), "gifload", "image/gif"),
    ("resize/300/strip/format/webp/quality/50", (300, 200), "webpload", "image/webp"),
    ("resize/600/split/150/1", (600, 150), "jpegload", "image/jpeg"),
    ("resize/600/split/150/2", (600, 100), "jpegload", "image/jpeg"),     # the last tile is lower
])
def test_operations(stack, tmp_path, chain, size, loader, ctype):
    r, info = _get(stack, f"/photo.jpg/dims/{chain}", tmp_path)
    assert (info["width"], info["height"]) == size
    assert info["loader"] == loader
    assert r.headers["Content-Type"] == ctype


def test_grayscale(stack, tmp_path):
    _, info = _get(stack, "/photo.jpg/dims/resize/200/grayscale/format/png", tmp_path)
    assert (info["loader"], info["bands"]) == ("pngload", 1)


@pytest.mark.parametrize("chain,x,y,rgb", [
    ("crop/50x25/gravity/southeast", 25, 12, [255, 255, 0]),
    ("gravity/northeast/crop/50x25", 25, 12, [0, 255, 0]),
    ("crop/20x20+10+60", 10, 10, [0, 0, 255]),
    ("rotate/180", 10, 10, [255, 255, 0]),
    ("flop", 10, 10, [0, 255, 0]),
    ("extend/220x100/gravity/east/background/ff00ff", 5, 50, [255, 0, 255]),
])
def test_operations_pick_the_right_pixels(stack, tmp_path, chain, x, y, rgb):
    r, _ = _get(stack, f"/quad.png/dims/{chain}", tmp_path)
    assert r.headers["Content-Type"] == "image/png"
    got = _pixel(_save(r.content, tmp_path, "px"), x, y)
    assert all(abs(a - b) <= 8 for a, b in zip(got, rgb)), (chain, got, rgb)


def test_animated_gif_keeps_its_frames(stack, tmp_path):
    r, info = _get(stack, "/anim.gif/dims/resize/100", tmp_path)
    assert r.headers["Content-Type"] == "image/gif"
    path = _save(r.content, tmp_path, "anim")
    assert int(vips_field(path, "n-pages")) == 6
    assert (info["width"], info["height"]) == (100, 50)
    r, info = _get(stack, "/anim.gif/dims/resize/100/format/webp", tmp_path)
    assert int(vips_field(_save(r.content, tmp_path, "anim"), "n-pages")) == 6


def test_animated_gif_to_jpeg_takes_the_first_frame(stack, tmp_path):
    rid = "frames-to-jpeg-check"
    r = stack.get("/anim.gif/dims/resize/100/format/jpeg", headers={"X-Request-Id": rid}, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    info = image_info(r.content, str(tmp_path))
    assert (info["width"], info["height"], info["loader"]) == (100, 50, "jpegload")
    # the answer says so (REPLY note -> X-Refract-Note), and so does the worker's log
    assert r.headers["X-Refract-Note"] == "frames=1 (first of 6: jpeg cannot animate)"
    r2 = stack.get("/anim.gif/dims/resize/100", timeout=30)
    assert "X-Refract-Note" not in r2.headers  # kept whole: nothing to say
    deadline = time.monotonic() + 3
    lines = []
    while time.monotonic() < deadline and not lines:
        lines = [l for l in stack.workers[0].log().splitlines() if f"req={rid} " in l]
        time.sleep(0.05)
    assert lines and "frames=1 (first of 6: jpeg cannot animate)" in lines[0], lines


def test_truncated_jpeg_falls_back_to_the_original(stack, ops_media):
    with open(os.path.join(ops_media, "trunc.jpg"), "rb") as f:
        data = f.read()
    for chain in ("resize/300", "format/png", "rotate/90"):
        r = stack.get(f"/trunc.jpg/dims/{chain}", timeout=30)
        assert r.status_code == 200
        assert r.headers.get(FALLBACK) == "source_not_decodable", (chain, dict(r.headers))
        assert sha256(r.content) == sha256(data)


@pytest.mark.parametrize("path,words", [
    ("/photo.jpg/dims/crop/10x10+5000+0", "outside the 2400x1600 image"),
    ("/photo.jpg/dims/resize/16000x<", "over the budget 40000000"),
    ("/photo.jpg/dims/extend/9000x9000", "over the budget 40000000"),
    ("/photo.jpg/dims/split/500/4", "no tile 4, the 2400x1600 image has 4 tiles of 500 rows"),
])
def test_chain_that_cannot_apply_is_400(stack, tmp_path, path, words):
    r, _ = _get(stack, path, tmp_path, status=400)
    assert one_line(r.text) and words in r.text, r.text


def test_split_manifest(stack):
    r = stack.get("/photo.jpg/dims/resize/600/split/150/manifest.json", timeout=30)
    assert r.status_code == 200, r.text[:200]
    assert r.headers["Content-Type"] == "application/json"
    doc = json.loads(r.content)
    assert (doc["width"], doc["height"], doc["tile_height"], doc["count"]) == (600, 400, 150, 3)
    assert [(t["y"], t["height"]) for t in doc["tiles"]] == [(0, 150), (150, 150), (300, 100)]


@pytest.mark.parametrize("chain", ["blur/100/format/png",             # stopped while it is encoded
                                   "blur/100/rotate/90/format/png"])  # ... while it is decoded into memory
def test_job_past_its_deadline_stops_inside_the_transform(make_stack, media, chain):
    """A transform whose job times out is stopped between tiles (libvips
    kill flag), not computed to the end: the one job slot is free again
    at once, and the worker lives on."""
    st = make_stack([{"name": "img.test", "default": True, "origin": "file://" + media["dir"]}],
                    bus={"job_timeout": "400ms", "retries": 0}, image_worker={"jobs": 1},
                    vhost_defaults={"cache": {"enable": False}})
    t0 = time.monotonic()
    r = st.get(f"/photo.jpg/dims/{chain}", timeout=30)  # seconds of work on 2400x1600
    assert r.status_code == 504, (r.status_code, r.text)
    assert time.monotonic() - t0 < 3
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "stopped during the transform" not in st.workers[0].log():
        time.sleep(0.05)
    assert "stopped during the transform" in st.workers[0].log(), st.workers[0].log()[-2000:]
    t1 = time.monotonic()
    r = st.get("/photo.jpg/dims/resize/100", timeout=30)
    assert r.status_code == 200
    assert time.monotonic() - t1 < 2, "the worker was still busy with the timed-out job"
    assert st.workers[0].alive()


@pytest.mark.parametrize("path,accept,ctype,frames", [
    # the client takes AVIF, but an animation keeps a format that animates
    ("/anim.gif/dims/resize/100/format/auto", "image/avif,image/webp", "image/gif", 6),
    # a WebP source for a client that did not say it takes WebP: jpeg
    ("/photo.webp/dims/resize/100/format/auto", "image/*", "image/jpeg", 1),
    ("/photo.webp/dims/resize/100/format/auto", "image/webp", "image/webp", 1),
])
def test_format_auto_answers_what_the_client_takes(stack, tmp_path, path, accept, ctype, frames):
    r = stack.get(path, headers={"Accept": accept}, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == ctype, (r.status_code, r.headers)
    p = _save(r.content, tmp_path, "auto")
    n = int(vips_field(p, "n-pages")) if frames > 1 else 1
    assert n == frames


def test_blur_of_transparent_edges_keeps_their_colour(stack, tmp_path):
    """Blur is done on alpha-premultiplied colour: the half-transparent
    pixels at the edge stay red, the hidden green does not bleed in."""
    r, _ = _get(stack, "/edge.png/dims/blur/4/format/png", tmp_path)
    path = _save(r.content, tmp_path, "edge")
    out = subprocess.run(["vips", "getpoint", path, "53", "50"], capture_output=True, text=True, timeout=30)
    rgba = [round(float(v)) for v in out.stdout.split()]
    assert 0 < rgba[3] < 255, rgba  # part-transparent after the blur
    assert rgba[0] > 200 and rgba[1] < 30, rgba  # red, not a red-green mix


def test_strip_converts_a_wide_gamut_image_to_srgb_first(stack, tmp_path):
    """Without its profile a P3 image would be read as sRGB (dull): strip
    converts its colour to sRGB before dropping the profile."""
    kept, _ = _get(stack, "/redp3.png/dims/format/png", tmp_path)
    p = _save(kept.content, tmp_path, "kept")
    assert _pixel(p, 5, 5) == [232, 51, 34]  # P3 numbers, with the P3 profile kept
    assert "icc-profile-data" in subprocess.run(["vipsheader", "-a", p], capture_output=True, text=True).stdout
    r, _ = _get(stack, "/redp3.png/dims/strip/format/png", tmp_path)
    p = _save(r.content, tmp_path, "stripped")
    assert "icc-profile-data" not in subprocess.run(["vipsheader", "-a", p], capture_output=True, text=True).stdout
    red = _pixel(p, 5, 5)
    assert red[0] >= 250 and red[1] <= 5 and red[2] <= 5, red  # sRGB red again
