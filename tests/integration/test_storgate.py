"""refract-storgate-scheduler: the seed's landing zone end to end (files
dropped are moved to the hidden mount, sources deleted, one webhook per
item), transforms run by an image worker over the scheduler's own bus with
the seed's savePath templates, webhooks that survive a restart with their
target down, the file lease (one leader, a successor after a kill -9, the
run resumed), and refusals of bad schedules and templates."""
import collections
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import harness


class Hooks:
    """A webhook receiver: records each POST's JSON; answers 503 while down."""

    def __init__(self):
        self.got = []
        self.down = False
        hooks = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if hooks.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                hooks.got.append((self.headers.get("Idempotency-Key"), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def hooks():
    h = Hooks()
    yield h
    h.close()


def _wait(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _tree(root):
    out = {}
    for d, _, files in os.walk(root):
        if ".refract-s3" in d:
            continue
        for f in files:
            p = os.path.join(d, f)
            try:  # a scheduler may move it meanwhile
                out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
            except FileNotFoundError:
                pass
    return out


def _count(root):
    """Files under root (cheap: no hashing), .refract-s3 excepted."""
    return sum(len(f) for d, _, f in os.walk(root) if ".refract-s3" not in d)


def _drop(root, n, nested=True):
    files = {}
    for i in range(n):
        rel = f"d{i % 3}/sub/f{i}.bin" if nested and i % 2 else f"f{i}.bin"
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        data = harness.pattern_bytes(1000 + 37 * i, seed=i + 1)
        with open(p, "wb") as f:
            f.write(data)
        files[rel] = hashlib.sha256(data).hexdigest()
    return files


def _landing(tmp_path, hook_url, **over):
    up, svc = str(tmp_path / "upload"), str(tmp_path / "service")
    os.makedirs(up)
    os.makedirs(svc)
    bucket = {
        "name": "image_landing_bucket",
        "expose": True,
        "mounts": [{"mountPoint": "/image_landing", "originPath": up},
                   {"mountPoint": "/image_service", "originPath": svc, "expose": False}],
        # The seed writes "*/5 * * * *"; the tests start runs with SIGUSR1, and
        # a schedule firing in the middle of one (a test that ran across a
        # five-minute boundary once saw two runs) would change the counts.
        "events": {"onBatch": [{"enable": True, "chunkSize": over.get("chunk", 1000), "path": "/image_landing",
                                "schedule": "0 0 1 1 *", "trigger": {"workflow": "migrate_tmpimg"},
                                "webhook": {"onItemCompleted": hook_url}}]},
        "workflows": [{"name": "migrate_tmpimg",
                       "tasks": [{"function": None, "savePath": "/image_service/{{ item.path }}",
                                  "whenExist": "overwrite", "timeout": 60}],
                       "onComplete": {"src": {"op": "delete"}}}],
    }
    sg = {"credentials": [{"access_key": "AK", "secret_key": "SK"}], "buckets": [bucket]}
    sg.update(over.get("storgate", {}))
    return up, svc, sg


def test_landing_zone_end_to_end(make_stack, tmp_path, hooks):
    """The seed's NFS landing zone: every file dropped under /image_landing
    (nested too) ends byte-exact under the hidden /image_service mount at
    /image_service/image_landing/…, its source deleted (and the emptied
    directories with it), one onItemCompleted webhook per item with a unique
    idempotency key; chunks of 4 keep every item exactly once."""
    up, svc, sg = _landing(tmp_path, hooks.url, chunk=4)
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate=sg)
    files = _drop(up, 11)
    s = st.add_scheduler()
    s.signal(signal.SIGUSR1)
    _wait(lambda: len(hooks.got) == 11, 30, "11 webhooks")
    assert _tree(up) == {}
    assert sorted(os.listdir(up)) == [".refract-s3"] or os.listdir(up) == []
    assert _tree(svc) == {os.path.join("image_landing", k): v for k, v in files.items()}
    keys = [k for k, _ in hooks.got]
    assert len(set(keys)) == 11, keys
    paths = sorted(p["item"]["path"] for _, p in hooks.got)
    assert paths == sorted("/image_landing/" + k for k in files)
    for k, p in hooks.got:
        assert p["event"] == "onItemCompleted" and p["bucket"] == "image_landing_bucket" and p["id"] == k
        assert p["workflow"] == "migrate_tmpimg" and p["item"]["size"] > 0 and p["item"]["state"] == "file"
    assert st.scheduler_metric(s, "refract_storgate_items_total", bucket="image_landing_bucket",
                               workflow="migrate_tmpimg", outcome="done") == 11
    _wait(lambda: st.scheduler_metric(s, "refract_storgate_batches_total", bucket="image_landing_bucket",
                                      outcome="completed") == 1, 30, "the run to complete")
    assert "chunk 3: 3 item(s)" in s.log()


def test_transform_with_seed_templates(make_stack, tmp_path, media):
    """A task with a function runs on an image worker connected to the
    scheduler's own broker; the seed's second savePath template names the
    output (relpath, dirname, basename, rsplit with [0] and [-1]); the
    output decodes as a 100-px-wide WebP; pathPattern's #2 names another."""
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    os.makedirs(os.path.join(src, "in", "a"))
    os.makedirs(out)
    shutil.copy(media["photo.jpg"], os.path.join(src, "in", "a", "p.x.jpg"))
    bucket = {
        "meta": {"name": "b"},
        "mounts": [{"originPath": src}, {"mountPoint": "/out", "originPath": out, "expose": False}],
        "events": {"onBatch": [{"enable": True, "path": "/in", "schedule": "0 0 1 1 *",
                                "trigger": {"workflow": "w"}}]},
        "workflows": [{"name": "w", "tasks": [
            {"function": "/hyperdims/format/webp/resize/100",
             "savePath": "/out/{{ item.path | relpath(source_dir) | dirname }}/{{ item.path | basename | "
                         "rsplit('.', 1)[0] }}_m.{{ item.path | basename | rsplit('.', 1)[-1] }}"},
            {"function": None, "savePath": "/out/copy/#2", "pathPattern": "/([^/]+)/(.*)"},
        ]}],
    }
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + src}], workers=1,
                    storgate={"buckets": [bucket]}, scheduler_bus=True)
    s = st.add_scheduler()
    s.signal(signal.SIGUSR1)
    want = os.path.join(out, "a", "p.x_m.jpg")
    _wait(lambda: os.path.exists(want) and os.path.exists(os.path.join(out, "copy", "a", "p.x.jpg")), 30,
          "both outputs\n" + s.log())
    info = harness.image_info(open(want, "rb").read(), str(tmp_path), "o")
    assert info["loader"].startswith("webpload") and info["width"] == 100, info
    assert open(os.path.join(out, "copy", "a", "p.x.jpg"), "rb").read() == \
        open(os.path.join(src, "in", "a", "p.x.jpg"), "rb").read()
    assert os.path.exists(os.path.join(src, "in", "a", "p.x.jpg"))  # onComplete: none


def test_video_functions_as_tasks(make_stack, tmp_path):
    """Video functions run as tasks on a video worker connected to the
    scheduler's broker, written as what follows the video in a gateway
    URL: a thumbnail (/thumbnail/T/WxH/webp), a trim (?trimming=A-B), a
    transcode (/mp4/HEIGHTp) and a sprite sheet. Every output is probed."""
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    os.makedirs(os.path.join(src, "in"))
    os.makedirs(out)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=6",
                    "-f", "lavfi", "-i", "sine=duration=6", "-c:v", "libx264", "-preset", "veryfast", "-g", "25",
                    "-c:a", "aac", "-movflags", "+faststart", os.path.join(src, "in", "clip.mp4")],
                   check=True, timeout=60)
    base = "{{ item.path | basename | rsplit('.', 1)[0] }}"
    bucket = {
        "meta": {"name": "v"},
        "mounts": [{"originPath": src}, {"mountPoint": "/out", "originPath": out, "expose": False}],
        "events": {"onBatch": [{"enable": True, "path": "/in", "schedule": "0 0 1 1 *",
                                "trigger": {"workflow": "w"}}]},
        "workflows": [{"name": "w", "tasks": [
            {"function": "/thumbnail/2.5/160x0/webp", "savePath": f"/out/{base}.webp"},
            {"function": "?trimming=1-3", "savePath": f"/out/{base}_1-3.mp4"},
            {"function": "/mp4/120p", "savePath": f"/out/{base}_120p.mp4"},
            {"function": "/sprite/1/3x2/64x0/0.jpg", "savePath": f"/out/{base}_sprite.jpg"},
        ]}],
    }
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + src}], workers=0,
                    video_workers=1, storgate={"buckets": [bucket]}, scheduler_bus=True)
    s = st.add_scheduler()
    s.signal(signal.SIGUSR1)
    names = ["clip.webp", "clip_1-3.mp4", "clip_120p.mp4", "clip_sprite.jpg"]
    _wait(lambda: all(os.path.exists(os.path.join(out, n)) for n in names), 90, "the four outputs\n" + s.log())

    def probe(name, entries):
        r = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_entries", entries,
                            os.path.join(out, name)], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    thumb = probe("clip.webp", "stream=codec_name,width,height")["streams"][0]
    assert (thumb["codec_name"], thumb["width"], thumb["height"]) == ("webp", 160, 120), thumb
    trim = probe("clip_1-3.mp4", "stream=codec_name,nb_frames:format=duration")
    assert abs(float(trim["format"]["duration"]) - 2.0) < 0.1, trim
    assert {"h264": "50"}.items() <= {x["codec_name"]: x["nb_frames"] for x in trim["streams"]}.items(), trim
    tx = probe("clip_120p.mp4", "stream=codec_name,height")["streams"]
    assert {(x["codec_name"], x.get("height")) for x in tx} == {("h264", 120), ("aac", None)}, tx
    sheet = probe("clip_sprite.jpg", "stream=codec_name,width,height")["streams"][0]
    assert (sheet["codec_name"], sheet["width"], sheet["height"]) == ("mjpeg", 3 * 64, 2 * 48), sheet
    assert s.alive()


def test_bad_task_function_refused(make_stack, tmp_path):
    """A task function is parsed when the configuration loads, as the
    scheduler will run it: a malformed one stops -t with the reason."""
    for function, want in [("/thumbnail/abc", "'abc' is not a time"), ("/mp4/99999p", "is not a height"),
                           ("?trimming=5-2", "trimming: '5-2' is not START-END"),
                           ("?trimmming=1-2", "is not ?trimming=A-B"),
                           ("/dims/nope/1", "task function: "), ("/video/x", "not /dims/")]:
        bucket = {"meta": {"name": "v"}, "mounts": [{"originPath": str(tmp_path)}],
                  "workflows": [{"name": "w", "tasks": [{"function": function, "savePath": "/x"}]}]}
        st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                        storgate={"buckets": [bucket]}, start=False)
        r = subprocess.run([harness.SCHEDULER_BIN, "-t", "-c", st.cfg_path], capture_output=True, text=True)
        assert r.returncode == 1 and want in r.stderr, (function, r.stderr)


def test_outbox_survives_restart_with_target_down(make_stack, tmp_path, hooks):
    """Webhooks to a target that answers 503 stay in the outbox; the
    scheduler is stopped and started again; once the target is back every
    webhook arrives, each item's exactly once (one idempotency key each)."""
    up, svc, sg = _landing(tmp_path, hooks.url)
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate=sg)
    files = _drop(up, 5, nested=False)
    hooks.down = True
    s = st.add_scheduler()
    s.signal(signal.SIGUSR1)
    _wait(lambda: _tree(up) == {} and len(_tree(svc)) == 5, 20, "the items")
    outbox = os.path.join(st.config["storgate_scheduler"]["state_dir"], "outbox", "node0")  # the node's own
    _wait(lambda: len([f for f in os.listdir(outbox) if f.endswith(".json")]) == 5, 10, "5 webhooks queued")
    assert st.scheduler_metric(s, "refract_storgate_outbox_pending") == 5
    s.expected_exit = True
    s.stop()
    hooks.down = False
    s2 = st.add_scheduler(name="node0")
    _wait(lambda: len(hooks.got) == 5, 20, "the 5 webhooks after the restart")
    assert len({k for k, _ in hooks.got}) == 5
    assert sorted(p["item"]["filename"] for _, p in hooks.got) == sorted(files)
    _wait(lambda: os.listdir(outbox) == [], 5, "an empty outbox")
    assert st.scheduler_metric(s2, "refract_storgate_outbox_pending") == 0


def test_held_webhooks_of_a_stopped_run_are_settled_at_start(make_stack, tmp_path, hooks):
    """An item's onItemCompleted webhook is written, held, before its
    onComplete removes the source, and released after; a node killed
    between the two leaves it held (here: planted, as such a run leaves
    it). At the next start the held webhook whose source is gone goes out
    (the item was done), the one whose source is still there is dropped,
    and that item, run again, sends its own."""
    up, svc, sg = _landing(tmp_path, hooks.url)
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate=sg)
    with open(os.path.join(up, "there.bin"), "wb") as f:
        f.write(b"still here")
    outbox = os.path.join(st.config["storgate_scheduler"]["state_dir"], "outbox", "node0")
    os.makedirs(outbox)
    for name, path in (("gone", "/image_landing/gone.bin"), ("there", "/image_landing/there.bin")):
        key = f"old-run-{name}:onItemCompleted"
        payload = {"id": key, "event": "onItemCompleted", "node": "node0", "bucket": "image_landing_bucket",
                   "workflow": "migrate_tmpimg", "item": {"path": path}}
        with open(os.path.join(outbox, f"1796000000000000000-{name}-1.hold"), "w") as f:
            f.write(f"{hooks.url}\n{key}\n{json.dumps(payload)}")
    s = st.add_scheduler()
    _wait(lambda: len(hooks.got) == 1, 10, "the held webhook that is due\n" + s.log())
    assert hooks.got[0][0] == "old-run-gone:onItemCompleted"
    assert os.listdir(outbox) == [] or all(not f.endswith(".hold") for f in os.listdir(outbox))
    s.signal(signal.SIGUSR1)
    _wait(lambda: len(hooks.got) == 2, 10, "the item that ran again\n" + s.log())
    assert hooks.got[1][1]["item"]["path"] == "/image_landing/there.bin"
    assert hooks.got[1][0] != "old-run-there:onItemCompleted"
    assert _tree(svc) == {"image_landing/there.bin": hashlib.sha256(b"still here").hexdigest()}
    time.sleep(0.5)
    assert len(hooks.got) == 2


@pytest.mark.timeout_s(240)  # ~30 s here; slower under ASan on a busy machine
def test_file_lease_one_leader_and_failover(make_stack, tmp_path, hooks):
    """Two schedulers share a file lease (term 2 s): only the leader lists
    the batch, and it hands each chunk's items out through files beside the
    lease (LEASE.dist/) to both nodes. The leader is killed (-9) in the
    middle of a run of 2000 items (chunks of 5); the other takes the lease
    once the term is over, hands out again what the dead node had taken,
    resumes the run from the saved cursor, and every item ends moved, none
    lost, the only repeats being items of the chunk in flight (at most one
    each)."""
    lease = str(tmp_path / "lease")
    up, svc, sg = _landing(tmp_path, hooks.url, chunk=5,
                           storgate={"distribution": {"leader": {"url": "file://" + lease, "term": "2s"}}})
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate=sg)
    files = _drop(up, 2000, nested=False)  # enough that the kill lands mid-run however fast items go
    a = st.add_scheduler(name="A", jobs=1)
    _wait(lambda: st.scheduler_metric(a, "refract_storgate_leader") == 1, 10, "A to lead")
    b = st.add_scheduler(name="B", jobs=1)
    time.sleep(0.5)
    assert st.scheduler_metric(b, "refract_storgate_leader") == 0
    b.signal(signal.SIGUSR1)  # not the leader: nothing happens
    time.sleep(0.5)
    assert len(_tree(svc)) == 0
    a.signal(signal.SIGUSR1)
    # the leader hands items out: both nodes take some from LEASE.dist/queue
    _wait(lambda: _count(svc) >= 10 and "taken from the shared queue" in a.log() and
          "taken from the shared queue" in b.log(), 20, "both nodes to take items")
    a.kill9()
    _wait(lambda: st.scheduler_metric(b, "refract_storgate_leader") == 1, 10, "B to lead")
    _wait(lambda: _count(up) == 0 and _count(svc) == 2000, 60, "B to finish the run\n" + b.log())
    assert _tree(svc) == {os.path.join("image_landing", k): v for k, v in files.items()}
    assert "resuming after" in b.log()
    paths = [p["item"]["path"] for _, p in hooks.got]
    times = collections.Counter(paths)
    dup = {x: k for x, k in times.items() if k > 1}
    assert len(dup) <= 5 and all(k == 2 for k in dup.values()), dup
    assert os.listdir(lease + ".dist/queue") == []


def test_bad_schedule_and_template_refused(tmp_path, make_stack):
    """A schedule that is not 5-field cron, a savePath that is not a
    Nunjucks template and a pathPattern group the regex does not have stop
    the scheduler's -t (and its start) with the bucket, the workflow and the
    reason."""
    up, svc, sg = _landing(tmp_path, "http://127.0.0.1:1/")
    sg["buckets"][0]["events"]["onBatch"][0]["schedule"] = "61 * * * *"
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate=sg)
    r = subprocess.run([harness.SCHEDULER_BIN, "-t", "-c", st.cfg_path], capture_output=True, text=True)
    assert r.returncode == 1
    assert "image_landing_bucket" in r.stderr and "61" in r.stderr, r.stderr
    # a savePath that is not a template, and a pathPattern group the regex lacks
    for save, pattern, want in [("/x/{{ item.path ", None, "savePath"), ("/x/#3", "/([^/]+)/(.*)", "savePath")]:
        sg["buckets"][0]["events"]["onBatch"][0]["schedule"] = "* * * * *"
        sg["buckets"][0]["workflows"][0]["tasks"][0]["savePath"] = save
        if pattern:
            sg["buckets"][0]["workflows"][0]["tasks"][0]["pathPattern"] = pattern
        cfg = dict(st.config, storgate=dict(st.config["storgate"], buckets=sg["buckets"]))
        path = st.write_config(cfg, str(tmp_path / "bad.yaml"))
        r = subprocess.run([harness.SCHEDULER_BIN, "-t", "-c", path], capture_output=True, text=True)
        assert r.returncode == 1 and want in r.stderr and "migrate_tmpimg" in r.stderr, r.stderr


def _redis(tmp_path):
    from test_redis import Redis  # the suite's redis-server fixture class
    return Redis(str(tmp_path))


def _leaders(st, scheds):
    return [s for s in scheds if s.alive() and st.scheduler_metric(s, "refract_storgate_leader") == 1]


@pytest.mark.timeout_s(420)  # 10,000 items: ~45 s here, some minutes under ASan on a busy machine
def test_redis_lease_three_nodes_failover(make_stack, tmp_path, hooks):
    """Three schedulers share a lease in a real redis-server (term 2 s):
    exactly one leads, and it hands each chunk's items out through Redis
    to all three. The leader is killed (-9) in the middle of a run of
    10,000 items (the issue's size); another takes the lease after the term, hands the dead node's
    taken items out again, adopts its undelivered webhooks, resumes the
    run from the progress kept in Redis, and every item ends moved
    byte-exact with its webhook; an item is repeated at most once, and only
    items of the chunk in flight."""
    N = 10000
    r = _redis(tmp_path)
    try:
        up, svc, sg = _landing(tmp_path, hooks.url, chunk=20, storgate={
            "distribution": {"leader": {"url": f"redis://127.0.0.1:{r.port}/t", "term": "2s"}}})
        st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                        storgate=sg)
        files = _drop(up, N, nested=False)  # enough that the kill lands mid-run however fast items go
        scheds = [st.add_scheduler(name=n, jobs=1) for n in ("A", "B", "C")]
        _wait(lambda: len(_leaders(st, scheds)) == 1, 10, "one leader")
        time.sleep(0.5)
        assert len(_leaders(st, scheds)) == 1
        lead = _leaders(st, scheds)[0]
        for s in scheds:
            s.signal(signal.SIGUSR1)
        _wait(lambda: _count(svc) >= 40, 30, "the leader to move some")
        lead.kill9()
        rest = [s for s in scheds if s is not lead]
        _wait(lambda: len(_leaders(st, rest)) == 1, 10, "a new leader")
        new = _leaders(st, rest)[0]
        _wait(lambda: _count(up) == 0 and _count(svc) == N, 300, "the run to finish\n" + new.log())
        assert _tree(svc) == {os.path.join("image_landing", k): v for k, v in files.items()}
        assert "resuming after" in new.log()
        _wait(lambda: len({p["item"]["path"] for _, p in hooks.got}) == N, 60, "a webhook per item")
        paths = [p["item"]["path"] for _, p in hooks.got]
        times = collections.Counter(paths)
        dup = {x: k for x, k in times.items() if k > 1}
        assert len(dup) <= 20 and all(k == 2 for k in dup.values()), dup
        # the leader handed items out: more than one node ran them
        assert len({p["node"] for _, p in hooks.got}) >= 2, {p["node"] for _, p in hooks.got}
    finally:
        r.close()


def test_redis_item_of_a_dead_node_done_before_it_died(make_stack, tmp_path, hooks):
    """A node that dies after an item's source went (onComplete deleted
    it) but before its webhook was queued leaves the item in its taken
    list. The leader hands it out again marked "again"; its re-run finds
    the source gone and every output there, so it counts as done and the
    owed onItemCompleted webhook goes out. An item handed out again whose
    output is missing too is aborted, as before, and a first attempt whose
    source is gone is aborted even when an output is there."""
    r = _redis(tmp_path)
    try:
        up, svc, sg = _landing(tmp_path, hooks.url, storgate={
            "distribution": {"leader": {"url": f"redis://127.0.0.1:{r.port}/t", "term": "2s"}}})
        bucket = sg["buckets"][0]
        bucket["events"]["onBatch"][0]["webhook"]["onItemAborted"] = hooks.url
        st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                        storgate=sg)
        os.makedirs(os.path.join(svc, "image_landing"))
        for name in ("done.bin", "fresh.bin"):  # outputs there, sources gone
            with open(os.path.join(svc, "image_landing", name), "wb") as f:
                f.write(b"moved")
        cli = ["redis-cli", "-p", str(r.port)]

        def entry(n, key):
            return json.dumps({"id": f"run-{n}", "bucket": "image_landing_bucket", "event": 0,
                               "key": f"image_landing/{key}", "chunk": "run:chunk1"})
        # node Z took two items and stopped (no heartbeat key)
        subprocess.run(cli + ["RPUSH", "t:storgate:proc:Z", entry(1, "done.bin"), entry(2, "lost.bin")], check=True,
                       capture_output=True)
        subprocess.run(cli + ["SADD", "t:storgate:nodes", "Z"], check=True, capture_output=True)
        a = st.add_scheduler(name="A", jobs=1)
        _wait(lambda: len(hooks.got) == 2, 20, "two webhooks\n" + a.log())
        got = {p["item"]["path"]: p for _, p in hooks.got}
        assert got["/image_landing/done.bin"]["event"] == "onItemCompleted", got
        assert got["/image_landing/lost.bin"]["event"] == "onItemAborted", got
        assert "the source is gone" in got["/image_landing/lost.bin"]["error"]
        assert "done by an earlier attempt" in a.log()
        # a first attempt (not handed out again) with its source gone is aborted
        subprocess.run(cli + ["RPUSH", "t:storgate:queue", entry(3, "fresh.bin")], check=True, capture_output=True)
        _wait(lambda: len(hooks.got) == 3, 20, "a third webhook\n" + a.log())
        assert hooks.got[2][1]["event"] == "onItemAborted" and hooks.got[2][1]["item"]["path"] == \
            "/image_landing/fresh.bin", hooks.got[2]
    finally:
        r.close()


def test_redis_resumed_run_keeps_idempotency_keys_unique(make_stack, tmp_path, hooks):
    """A leader that takes over a run lists the interrupted chunk again from
    the saved cursor; its items and the chunk get numbers after the
    interrupted chunk's, so no two items share an idempotency key and the
    interrupted chunk's late acknowledgements do not count for the new one."""
    r = _redis(tmp_path)
    try:
        up, svc, sg = _landing(tmp_path, hooks.url, chunk=5, storgate={
            "distribution": {"leader": {"url": f"redis://127.0.0.1:{r.port}/t", "term": "2s"}}})
        st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                        storgate=sg)
        files = _drop(up, 12, nested=False)
        cli = ["redis-cli", "-p", str(r.port)]
        # a run whose first chunk (items 1-5) was listed by a leader that then stopped
        subprocess.run(cli + ["HSET", "t:storgate:progress", "image_landing_bucket.0", "run\n\n0\n0\n"], check=True,
                       capture_output=True)
        a = st.add_scheduler(name="A", jobs=1)
        _wait(lambda: _count(up) == 0 and len(hooks.got) == 12, 30, "the run to finish\n" + a.log())
        assert "resuming after '' (chunk 2)" in a.log(), a.log()
        keys = sorted(k for k, _ in hooks.got)
        assert len(set(keys)) == 12, keys
        assert all(int(k.split(":")[0].rsplit("-", 1)[1]) > 5 for k in keys), keys
        assert _tree(svc) == {os.path.join("image_landing", k): v for k, v in files.items()}
    finally:
        r.close()


def test_start_sweeps_stale_uploads_of_local_and_s3_mounts(make_stack, tmp_path):
    """At start the gateway removes what crashes left: multipart uploads
    untouched for a week, in a local mount's .refract-s3/uploads/ and in an
    S3-backed mount's staging directory (STATE/s3-uploads/BUCKET/N); recent
    ones stay. (The S3 endpoint is never contacted: nothing here needs it.)"""
    local = tmp_path / "local"
    state = tmp_path / "stack0" / "sg-state"  # make_stack's first stack's state_dir
    stage = state / "s3-uploads" / "b" / "1"
    week = time.time() - 8 * 86400
    made = {}
    for root in (local, stage):
        for name, old in (("old-upload", True), ("new-upload", False)):
            d = root / ".refract-s3" / "uploads" / name
            d.mkdir(parents=True)
            (d / "1").write_bytes(b"part")
            if old:
                os.utime(d, (week, week))
            made[d] = old
    sg = {"credentials": [{"access_key": "AK", "secret_key": "SK"}],
          "aws_s3": [{"name": "far", "endpoint": "http://127.0.0.1:9", "access_key": "a", "secret_key": "s",
                      "bucket": "x"}],
          "buckets": [{"meta": {"name": "b"}, "mounts": [{"mountPoint": "/", "originPath": str(local)},
                                                         {"mountPoint": "/s3", "originPath": "far@aws_s3/p"}]}]}
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate=sg)
    assert {d: not d.exists() for d in made} == made, {d: d.exists() for d in made}
    assert "removed 2 stale temporary file(s) or upload(s)" in st.gw.log(), st.gw.log()


def test_redis_fencing_refuses_a_deposed_leaders_write(make_stack, tmp_path, hooks):
    """A leader whose lease another node has taken (here: written into
    Redis behind its back, as after a pause longer than the term) may still
    believe it leads until its next renewal; its progress writes in that
    window are refused by the fencing token, and it then steps down."""
    r = _redis(tmp_path)
    try:
        up, svc, sg = _landing(tmp_path, hooks.url, storgate={
            "distribution": {"leader": {"url": f"redis://127.0.0.1:{r.port}/t", "term": "6s"}}})
        st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                        storgate=sg)
        _drop(up, 3, nested=False)
        a = st.add_scheduler(name="A", jobs=1)
        _wait(lambda: st.scheduler_metric(a, "refract_storgate_leader") == 1, 10, "A to lead")
        cli = ["redis-cli", "-p", str(r.port)]
        tok = int(subprocess.run(cli + ["GET", "t:storgate:token"], capture_output=True, text=True).stdout)
        subprocess.run(cli + ["SET", "t:storgate:leader", f"intruder {tok + 1}", "PX", "60000"], check=True,
                       capture_output=True)
        a.signal(signal.SIGUSR1)
        _wait(lambda: "progress not saved: the lease moved on" in a.log(), 10, "the refused write\n" + a.log())
        out = subprocess.run(cli + ["HGET", "t:storgate:progress", "image_landing_bucket.0"], capture_output=True,
                             text=True).stdout.strip()
        assert out == "", out  # nothing of A's reached Redis
        _wait(lambda: st.scheduler_metric(a, "refract_storgate_leader") == 0, 10, "A to step down")
    finally:
        r.close()


def _s3_lease(tmp_path, hook_url, term, **over):
    """The landing zone with its leader lease an object on storgate's own
    S3 API (this stack's, a bucket `leases` over a local directory):
    distribution.leader.url http://…/leases/{vhost}.lease, signed with the
    keys of the aws_s3 entry that authEndpoint names."""
    port = harness.free_port()
    leases = str(tmp_path / "leases")
    os.makedirs(leases)
    up, svc, sg = _landing(tmp_path, hook_url, **over)
    sg["listen"] = f"127.0.0.1:{port}"
    sg["buckets"].append({"meta": {"name": "leases"}, "mounts": [{"originPath": leases}]})
    sg["aws_s3"] = [{"name": "leasestore", "endpoint": "http://127.0.0.1:1", "access_key": "AK", "secret_key": "SK",
                     "bucket": "unused", "path_style": True}]
    sg["distribution"] = {"leader": {"url": f"http://127.0.0.1:{port}/leases/{{vhost}}.lease",
                                     "authEndpoint": "leasestore", "term": term}}
    return up, svc, sg, os.path.join(leases, "storgate.lease")


def _lease_line(path):
    with open(path) as f:
        head = f.read().split("\n")
    assert head[0] == "refract-lease 1", head
    node, tok, exp = head[1].split(" ")[1:]
    return node, int(tok), int(exp)


@pytest.mark.timeout_s(240)
def test_s3_lease_failover_resumes_the_run(make_stack, tmp_path, hooks):
    """Three schedulers share a lease that is an object on an S3 API with
    conditional writes (storgate's own; S3 has them since 2024), term 2 s:
    exactly one leads and runs the batch. It is killed (-9) mid-run; another
    takes the lease after the term with the next fencing token, resumes the
    run from the progress kept in the lease object, and every item of 2000 ends moved
    byte-exact; an item is repeated at most once, only in the chunk in
    flight."""
    up, svc, sg, lease = _s3_lease(tmp_path, hooks.url, "2s", chunk=5)
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate=sg)
    files = _drop(up, 2000, nested=False)  # enough that the kill lands mid-run however fast items go
    scheds = [st.add_scheduler(name=n, jobs=1) for n in ("A", "B", "C")]
    _wait(lambda: len(_leaders(st, scheds)) == 1, 10, "one leader")
    time.sleep(0.5)
    assert len(_leaders(st, scheds)) == 1
    lead = _leaders(st, scheds)[0]
    node, tok, _ = _lease_line(lease)
    assert node == "ABC"[scheds.index(lead)], node
    for s in scheds:
        s.signal(signal.SIGUSR1)
    _wait(lambda: _count(svc) >= 20, 30, "the leader to move some\n" + lead.log())
    lead.kill9()
    rest = [s for s in scheds if s is not lead]
    _wait(lambda: len(_leaders(st, rest)) == 1, 10, "a new leader")
    new = _leaders(st, rest)[0]
    _wait(lambda: _count(up) == 0 and _count(svc) == 2000, 120, "the run to finish\n" + new.log())
    assert _tree(svc) == {os.path.join("image_landing", k): v for k, v in files.items()}
    assert "resuming after" in new.log()
    node2, tok2, _ = _lease_line(lease)
    assert node2 == "ABC"[scheds.index(new)] and tok2 == tok + 1, (node2, tok2, tok)
    want = {"/image_landing/" + k for k in files}
    _wait(lambda: {p["item"]["path"] for _, p in hooks.got} >= want, 30, "a webhook per item")
    paths = [p["item"]["path"] for _, p in hooks.got]
    times = collections.Counter(paths)
    dup = {x: k for x, k in times.items() if k > 1}
    assert len(dup) <= 5 and all(k == 2 for k in dup.values()), dup


def test_s3_lease_fencing_refuses_a_deposed_leaders_write(make_stack, tmp_path, hooks):
    """A leader whose lease object another node has replaced (here: written
    through the S3 API behind its back, as after a pause longer than the
    term) still believes it leads until its next renewal; its progress write
    is a PUT with If-Match the ETag it last wrote, which answers 412: the
    write is refused, the object keeps the intruder's bytes, and the leader
    steps down."""
    up, svc, sg, lease = _s3_lease(tmp_path, hooks.url, "6s")
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate=sg)
    _drop(up, 3, nested=False)
    a = st.add_scheduler(name="A", jobs=1)
    _wait(lambda: st.scheduler_metric(a, "refract_storgate_leader") == 1, 10, "A to lead")
    _, tok, _ = _lease_line(lease)
    intruder = b"refract-lease 1\nlease intruder %d %d\n" % (tok + 1, int(time.time() * 1000) + 60000)
    _s3(st).put_object(Bucket="leases", Key="storgate.lease", Body=intruder)
    a.signal(signal.SIGUSR1)
    _wait(lambda: "progress not saved: the lease moved on" in a.log(), 10, "the refused write\n" + a.log())
    with open(lease, "rb") as f:
        assert f.read() == intruder  # nothing of A's reached the object
    _wait(lambda: st.scheduler_metric(a, "refract_storgate_leader") == 0, 10, "A to step down")


def test_s3_lease_refused_where_writes_are_not_conditional(make_stack, tmp_path, hooks):
    """A lease object on an endpoint that ignores If-None-Match and If-Match
    could not fence: the scheduler probes with an object of its own at start
    and refuses to start, saying so. The endpoint here is a plain HTTP
    server that stores every PUT whatever its headers say. (OpenStack
    Swift, which answers 501 instead, is in test_storgate_swift.py.)"""
    import http.server
    store = {}

    class Ignoring(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            store[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("ETag", '"%s"' % hashlib.md5(store[self.path]).hexdigest())
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_DELETE(self):
            store.pop(self.path, None)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ignoring)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        up, svc, sg = _landing(tmp_path, hooks.url, storgate={"distribution": {"leader": {
            "url": f"http://127.0.0.1:{srv.server_address[1]}/b/lease"}}})
        st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                        storgate=sg)
        s = st.add_scheduler(name="A", wait=False)
        s.expected_exit = True
        _wait(lambda: not s.alive(), 10, "the scheduler to refuse to start")
        assert "ignores If-None-Match: * on PUT, so it cannot fence a lease" in s.log(), s.log()
        assert store == {}  # the probe object was removed
    finally:
        srv.shutdown()


def test_throttling_pauses_items_under_a_cpu_burner(make_stack, tmp_path, hooks):
    """With the machine's CPU average over throttling.cpu.deactive (two
    busy loops on this 2-core machine, a 2 s window), the scheduler lists
    a run but takes no item (refract_storgate_throttled is 1); when the
    burners stop and the average falls under reactive, the items run. (The
    thresholds sit high, 95 and 90, so that other load on the machine cannot
    hold the pause.)"""
    up, svc, sg = _landing(tmp_path, hooks.url, storgate={
        "throttling": {"enable": True, "window": "2s", "cpu": {"deactive": 95, "reactive": 90}}})
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate=sg)
    _drop(up, 4, nested=False)
    burners = [subprocess.Popen(["/usr/bin/python3", "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        s = st.add_scheduler()
        _wait(lambda: st.scheduler_metric(s, "refract_storgate_throttled") == 1, 15, "the pause\n" + s.log())
        s.signal(signal.SIGUSR1)
        _wait(lambda: "chunk 1: 4 item(s)" in s.log(), 10, "the listing")
        time.sleep(1.0)
        assert len(_tree(svc)) == 0, "an item ran while throttled"
        assert st.scheduler_metric(s, "refract_storgate_items_queued") == 4
    finally:
        for b in burners:
            b.kill()
            b.wait()
    _wait(lambda: len(_tree(svc)) == 4, 20, "the items after the burners stopped\n" + s.log())
    assert st.scheduler_metric(s, "refract_storgate_throttled") == 0
    assert "items paused" in s.log() and "items resume" in s.log()


def _s3(st):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{st.s3_port}", region_name="ap-northeast-2",
                        aws_access_key_id="AK", aws_secret_access_key="SK",
                        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                      retries={"max_attempts": 1}))


def _in_out_bucket(tmp_path, name):
    """Directories up/ and svc/, and a bucket `name` over them: /in exposed,
    /out hidden (for outputs); its events and workflows are the caller's."""
    up, svc = str(tmp_path / "up"), str(tmp_path / "svc")
    os.makedirs(up)
    os.makedirs(svc)
    return up, svc, {"meta": {"name": name},
                     "mounts": [{"mountPoint": "/in", "originPath": up},
                                {"mountPoint": "/out", "originPath": svc, "expose": False}]}


def test_events_from_s3_traffic(make_stack, tmp_path, hooks):
    """onPut, onDelete and onGet raised by the S3 API reach the scheduler
    through STATE/events, also when it is down at that moment: a PUT made
    while no scheduler runs is copied to the hidden mount once one starts
    (its event id in the PUT's X-Refract-Event, in the webhook, and in the
    log line of each step); a DELETE removes that output (derived files
    follow their source); onGet's filter decides which GETs raise one."""
    up, svc, bucket = _in_out_bucket(tmp_path, "ev")
    bucket.update({
        "events": {"onPut": {"enable": True, "trigger": {"workflow": "mirror"},
                             "webhook": {"onItemCompleted": hooks.url}},
                   "onDelete": {"enable": True, "trigger": {"workflow": "mirror"}},
                   "onGet": {"enable": True, "filter": {"patterns": ["*.txt"]}, "trigger": {"workflow": "mirror"}}},
        "workflows": [{"name": "mirror", "tasks": [
            {"function": None, "savePath": "/out/{{ item.path | relpath(source_dir) }}"}]}],
    })
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate={"credentials": [{"access_key": "AK", "secret_key": "SK"}], "buckets": [bucket]})
    s3 = _s3(st)
    body = harness.pattern_bytes(70000, seed=3)
    r = s3.put_object(Bucket="ev", Key="in/a/x.bin", Body=body)
    ev_id = r["ResponseMetadata"]["HTTPHeaders"]["x-refract-event"]
    events = os.path.join(st.config["storgate_scheduler"]["state_dir"], "events")
    assert os.listdir(events) == [ev_id + ".json"]  # waiting: no scheduler yet
    s = st.add_scheduler()
    out = os.path.join(svc, "a", "x.bin")
    _wait(lambda: os.path.exists(out) and open(out, "rb").read() == body, 15, "the onPut copy\n" + s.log())
    _wait(lambda: len(hooks.got) == 1, 10, "the webhook")
    assert hooks.got[0][1]["item"]["path"] == "/in/a/x.bin" and hooks.got[0][0].startswith(ev_id)
    assert ev_id in s.log()
    _wait(lambda: os.listdir(events) == [], 10, "the event file to go")
    # a GET of a .bin raises nothing; of a .txt, an onGet (copied like the rest)
    g = s3.get_object(Bucket="ev", Key="in/a/x.bin")
    assert "x-refract-event" not in g["ResponseMetadata"]["HTTPHeaders"] and g["Body"].read() == body
    s3.put_object(Bucket="ev", Key="in/t.txt", Body=b"text\n")
    _wait(lambda: os.path.exists(os.path.join(svc, "t.txt")), 15, "the t.txt copy")
    os.unlink(os.path.join(svc, "t.txt"))
    g = s3.get_object(Bucket="ev", Key="in/t.txt")
    assert "x-refract-event" in g["ResponseMetadata"]["HTTPHeaders"]
    _wait(lambda: os.path.exists(os.path.join(svc, "t.txt")), 15, "the onGet copy")
    # DELETE: the output made from it goes too
    d = s3.delete_object(Bucket="ev", Key="in/a/x.bin")
    assert "x-refract-event" in d["ResponseMetadata"]["HTTPHeaders"]
    _wait(lambda: not os.path.exists(out), 15, "the onDelete removal\n" + s.log())
    assert st.scheduler_metric(s, "refract_storgate_items_total", bucket="ev", workflow="mirror",
                               outcome="done") == 4


def test_events_from_batch_scans(make_stack, tmp_path):
    """Files changed beside storgate (written into a mount's directory, not
    through the S3 API) raise onPut and onDelete when a batch run lists
    them: the first run records a baseline and raises nothing; the next
    raises onPut for a new and a changed file and onDelete for a removed
    one; a file PUT through the S3 API (announced by its PUT) is not raised
    again; a run with no change raises nothing."""
    up, svc, bucket = _in_out_bucket(tmp_path, "sc")
    bucket.update({
        "events": {"onPut": {"enable": True, "trigger": {"workflow": "mirror"}},
                   "onDelete": {"enable": True, "trigger": {"workflow": "mirror"}},
                   "onBatch": [{"enable": True, "path": "/in", "schedule": "0 0 1 1 *",
                                "trigger": {"workflow": "listed"}}]},
        "workflows": [{"name": "mirror", "tasks": [
                          {"function": None, "savePath": "/out/mirror/{{ item.path | relpath(source_dir) }}"}]},
                      {"name": "listed", "tasks": [
                          {"function": None, "savePath": "/out/listed/{{ item.path | relpath(source_dir) }}"}]}],
    })
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate={"credentials": [{"access_key": "AK", "secret_key": "SK"}], "buckets": [bucket]})
    for name, data in (("a.bin", b"a" * 100), ("sub/b.bin", b"b" * 200)):
        os.makedirs(os.path.dirname(os.path.join(up, name)), exist_ok=True)
        with open(os.path.join(up, name), "wb") as f:
            f.write(data)
    _s3(st).put_object(Bucket="sc", Key="in/c.bin", Body=b"c" * 300)  # its PUT raises onPut
    s = st.add_scheduler()
    mirror = os.path.join(svc, "mirror")
    _wait(lambda: os.path.exists(os.path.join(mirror, "c.bin")), 15, "the PUT's onPut copy\n" + s.log())

    def run(n):
        s.signal(signal.SIGUSR1)
        _wait(lambda: s.log().count("storgate scan sc.0:") == n, 20, f"scan run {n}\n" + s.log())
        return [line for line in s.log().splitlines() if "storgate scan sc.0:" in line][-1]

    # c.bin is storgate's (its PUT announced it): not tracked
    assert "2 key(s) recorded (a baseline); 0 onPut, 0 onDelete raised" in run(1)
    assert not os.path.exists(os.path.join(mirror, "a.bin"))
    # beside storgate: a.bin changed, sub/b.bin removed, d.bin new
    time.sleep(0.01)
    with open(os.path.join(up, "a.bin"), "wb") as f:
        f.write(b"A" * 150)
    os.unlink(os.path.join(up, "sub", "b.bin"))
    with open(os.path.join(up, "d.bin"), "wb") as f:
        f.write(b"d" * 400)
    os.makedirs(os.path.join(mirror, "sub"))
    with open(os.path.join(mirror, "sub", "b.bin"), "wb") as f:  # what an earlier onPut would have made
        f.write(b"b" * 200)
    assert "2 key(s) seen; 2 onPut, 1 onDelete raised" in run(2)
    _wait(lambda: os.path.exists(os.path.join(mirror, "d.bin")) and not os.path.exists(os.path.join(mirror, "sub", "b.bin"))
          and os.path.exists(os.path.join(mirror, "a.bin")) and open(os.path.join(mirror, "a.bin"), "rb").read() == b"A" * 150,
          15, "the scan events' workflows\n" + s.log())
    log = s.log()
    assert "onPut raised by a batch scan for /in/a.bin" in log and "onPut raised by a batch scan for /in/d.bin" in log
    assert "onDelete raised by a batch scan for /in/sub/b.bin" in log
    assert "batch scan for /in/c.bin" not in log
    assert "2 key(s) seen; 0 onPut, 0 onDelete raised" in run(3)


def test_events_timing_pre(make_stack, tmp_path):
    """trigger.timing pre (the seed's: the workflow first, then the client's
    request): a PUT is answered once its onPut workflow has stored the
    copy, a GET once its onGet workflow ran, a DELETE removes the object
    only after its onDelete workflow removed what was made from it; each
    says X-Refract-Workflow: finished. With no scheduler running, the
    answer waits for the workflow's task timeouts plus 5 s, then comes with
    X-Refract-Workflow: pending, and the workflow runs once a scheduler
    starts."""
    pre = {"workflow": "mirror", "timing": "pre"}
    up, svc, bucket = _in_out_bucket(tmp_path, "pre")
    bucket.update({
        "events": {"onPut": {"enable": True, "trigger": pre},
                   "onDelete": {"enable": True, "trigger": pre},
                   "onGet": {"enable": True, "filter": {"patterns": ["*.txt"]}, "trigger": pre}},
        "workflows": [{"name": "mirror", "tasks": [
            {"function": None, "savePath": "/out/{{ item.path | relpath(source_dir) }}", "timeout": 1}]}],
    })
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate={"credentials": [{"access_key": "AK", "secret_key": "SK"}], "buckets": [bucket]})
    s3 = _s3(st)
    # no scheduler: the PUT waits 1 s (the task's timeout) + 5 s, then is answered "pending"
    t0 = time.monotonic()
    r = s3.put_object(Bucket="pre", Key="in/early.txt", Body=b"early\n")
    waited = time.monotonic() - t0
    assert r["ResponseMetadata"]["HTTPHeaders"]["x-refract-workflow"] == "pending"
    assert 5.5 < waited < 15, waited
    assert not os.path.exists(os.path.join(svc, "early.txt"))
    s = st.add_scheduler()
    _wait(lambda: os.path.exists(os.path.join(svc, "early.txt")), 15, "the waiting event to run\n" + s.log())
    # PUT: the copy is there when the answer comes
    body = harness.pattern_bytes(50000, seed=5)
    r = s3.put_object(Bucket="pre", Key="in/a/x.txt", Body=body)
    h = r["ResponseMetadata"]["HTTPHeaders"]
    assert h["x-refract-workflow"] == "finished" and "x-refract-event" in h, h
    assert open(os.path.join(svc, "a", "x.txt"), "rb").read() == body
    # GET: the workflow ran before the bytes came
    os.unlink(os.path.join(svc, "a", "x.txt"))
    g = s3.get_object(Bucket="pre", Key="in/a/x.txt")
    assert g["ResponseMetadata"]["HTTPHeaders"]["x-refract-workflow"] == "finished"
    assert os.path.exists(os.path.join(svc, "a", "x.txt")) and g["Body"].read() == body
    # a GET the filter does not take is not held
    s3.put_object(Bucket="pre", Key="in/b.bin", Body=b"bin")
    g = s3.get_object(Bucket="pre", Key="in/b.bin")
    assert "x-refract-workflow" not in g["ResponseMetadata"]["HTTPHeaders"]
    # DELETE: the output made from it is gone before the object goes, and the object then goes
    d = s3.delete_object(Bucket="pre", Key="in/a/x.txt")
    assert d["ResponseMetadata"]["HTTPHeaders"]["x-refract-workflow"] == "finished"
    assert not os.path.exists(os.path.join(svc, "a", "x.txt"))
    assert not os.path.exists(os.path.join(up, "a", "x.txt"))
    assert s.alive()


@pytest.mark.parametrize("traverse,order", [
    ("depth", ["a/b/c/deep.txt", "a/m.txt", "b/x.txt", "z.txt"]),
    ("breadth", ["z.txt", "a/m.txt", "b/x.txt", "a/b/c/deep.txt"]),
])
def test_traverse_orders(make_stack, tmp_path, hooks, traverse, order):
    """traverse: depth takes the tree in S3 key order (depth first);
    breadth takes a directory's files before its subdirectories' — seen in
    the order items run, one per chunk (chunkSize 1, one item thread), and
    the run resumes correctly from the breadth cursor chunk after chunk."""
    up, svc, sg = _landing(tmp_path, hooks.url, chunk=1)
    sg["buckets"][0]["events"]["onBatch"][0]["traverse"] = traverse
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate=sg)
    for rel in order:
        p = os.path.join(up, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(rel)
    s = st.add_scheduler(jobs=1)
    s.signal(signal.SIGUSR1)
    _wait(lambda: len(hooks.got) == 4, 20, "4 webhooks\n" + s.log())
    done = [line.split("/image_landing/")[1].split(" done")[0] for line in s.log().splitlines()
            if " done (workflow" in line]
    assert done == order, done


def test_script_hooks(make_stack, tmp_path, hooks):
    """The seed's script webhooks: onItemCompleted names a .js file (like
    the seed's purge_cdn.js), run in Duktape with the payload as `event`
    and refract.http() to call out — here a CDN purge posted to a receiver,
    once per item with the item's path. A script that throws is retried
    (with backoff) until it succeeds: fixing the file delivers the hook."""
    script = tmp_path / "purge_cdn.js"
    script.write_text(
        "var r = refract.http('POST', %r, {purge: event.item.path, id: event.id});\n"
        "refract.log('purged ' + event.item.path + ': ' + r.status);\n"
        "if (r.status !== 200) throw new Error('purge failed: ' + r.status);\n" % hooks.url)
    up, svc, sg = _landing(tmp_path, str(script))
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate=sg)
    files = _drop(up, 3, nested=False)
    s = st.add_scheduler()
    s.signal(signal.SIGUSR1)
    _wait(lambda: len(hooks.got) == 3, 20, "3 purges\n" + s.log())
    assert sorted(p["purge"] for _, p in hooks.got) == sorted("/image_landing/" + k for k in files)
    assert all(k == p["id"] for k, p in hooks.got)  # the Idempotency-Key header is the payload's id
    assert s.log().count("purged /image_landing/") == 3
    # a broken script is retried until it works (a new run, once the first
    # is over: a file dropped during a run, before its cursor, waits for the next)
    _wait(lambda: st.scheduler_metric(s, "refract_storgate_batches_total", bucket="image_landing_bucket",
                                      outcome="completed") == 1, 30, "the first run to end")
    script.write_text("throw new Error('not yet');\n")
    _drop(up, 1, nested=False)
    s.signal(signal.SIGUSR1)
    _wait(lambda: "not yet" in s.log(), 20, "the failing script")
    assert len(hooks.got) == 3
    script.write_text("refract.http('POST', %r, {purge: event.item.path, id: event.id});\n" % hooks.url)
    _wait(lambda: len(hooks.got) == 4, 20, "the retried hook\n" + s.log())
    assert st.scheduler_metric(s, "refract_storgate_webhooks_total", outcome="retried") >= 1
