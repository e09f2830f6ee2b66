"""The RFB/1 bus seen from outside: load sharing, worker death (kill -9 and
SIGTERM), queue limits, deadlines, abandoned jobs, drains, late joiners,
gateway restarts and a worker shared by two gateways."""
import concurrent.futures as cf
import json
import signal
import socket
import threading
import time

import pytest

import harness
from harness import image_info, metric_value, one_line

SLOW = "/photo.jpg/dims/resize/2000x2000"  # a full decode + resample: the slowest job we have
MEDIUM = "/photo.jpg/dims/resize/1000x1000"
FAST = "/photo.jpg/dims/resize/100x100"


def _vhosts(media):
    # The bus is under test: every request must become a job, so results
    # are not cached (test_cache.py covers cached results).
    return [{"name": "img.test", "default": True, "origin": "file://" + media["dir"], "cache": {"enable": False}}]


def _fire(st, path, n, timeout=20):
    """n concurrent GETs released together; returns [(status, headers, body, seconds)]."""
    barrier = threading.Barrier(n)

    def one(_):
        barrier.wait(10)
        t0 = time.monotonic()
        r = st.get(path, timeout=timeout)
        return r.status_code, r.headers, r.content, time.monotonic() - t0

    with cf.ThreadPoolExecutor(max_workers=n) as ex:
        return list(ex.map(one, range(n), timeout=timeout + 15))


def _worker_jobs(st, w):
    return metric_value(st.worker_metrics(w), "refract_worker_jobs_total", service="image") or 0


@pytest.mark.timeout_s(60)
def test_two_workers_share_load(make_stack, media, tmp_path):
    st = make_stack(_vhosts(media), workers=2, image_worker={"jobs": 2})
    results = _fire(st, "/photo.jpg/dims/resize/640x640", 20)
    assert [r[0] for r in results] == [200] * 20, [(r[0], r[2][:100]) for r in results if r[0] != 200]
    info = image_info(results[0][2], str(tmp_path))
    assert (info["width"], info["height"]) == (640, 427)
    per_worker = [_worker_jobs(st, w) for w in st.workers]
    detail = [[(l, v) for n, l, v in harness.parse_metrics(st.worker_metrics(w)) if n == "refract_worker_jobs_total"]
              for w in st.workers]
    assert all(n > 0 for n in per_worker), f"jobs per worker: {detail}"
    assert sum(per_worker) == 20, (detail, st.metric("refract_bus_job_retries_total", service="image"))
    assert st.metric("refract_bus_jobs_total", service="image", outcome="ok") == 20
    harness.MEASUREMENTS.append(f"load sharing: 20 concurrent resizes split {per_worker[0]:.0f}/{per_worker[1]:.0f} "
                                "between two workers")


@pytest.mark.timeout_s(120)
def test_kill9_worker_under_load(make_stack, media, tmp_path):
    st = make_stack(_vhosts(media), workers=2, image_worker={"jobs": 2}, bus={"job_timeout": "30s"})
    victim, survivor = st.workers
    n = 30
    futures_done = []

    def killer():
        # Kill while the victim is busy.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                busy = metric_value(st.worker_metrics(victim), "refract_worker_jobs_inflight", service="image")
            except Exception:
                busy = 0
            if busy and busy >= 1:
                break
            time.sleep(0.02)
        victim.kill9()
        futures_done.append(time.monotonic())

    k = threading.Thread(target=killer, daemon=True)
    k.start()
    t0 = time.monotonic()
    results = _fire(st, MEDIUM, n, timeout=40)
    k.join(15)
    statuses = [r[0] for r in results]
    assert futures_done, "the victim was never seen busy"
    assert not victim.alive()
    assert set(statuses) <= {200, 503}, statuses
    for status, headers, body, _ in results:
        if status == 503:
            assert headers.get("Retry-After"), dict(headers)
            assert one_line(body.decode())
    ok = statuses.count(200)
    # At most the victim's capacity (2) can be lost, and only if their retry also failed.
    assert ok >= n - 2, f"only {ok}/{n} succeeded: {[(r[0], r[2][:100]) for r in results if r[0] != 200]}"
    assert max(r[3] for r in results) < 40
    info = image_info(next(r[2] for r in results if r[0] == 200), str(tmp_path))
    assert (info["width"], info["height"]) == (1000, 667)
    st.wait_workers(1, timeout=5)
    assert st.metric("refract_bus_worker_deaths_total", service="image") >= 1
    harness.MEASUREMENTS.append(
        f"kill -9 of one of two workers under 30 concurrent resizes: {ok} x 200, {statuses.count(503)} x 503, "
        f"retries {st.metric('refract_bus_job_retries_total', service='image') or 0:.0f}, "
        f"all answered in {time.monotonic() - t0:.1f}s")
    assert st.get(FAST).status_code == 200


@pytest.mark.timeout_s(120)
def test_queue_full_gives_503_with_retry_after(make_stack, media):
    st = make_stack(_vhosts(media), workers=1, image_worker={"jobs": 1}, bus={"queue_max": 2, "job_timeout": "40s"})
    results = _fire(st, SLOW, 12, timeout=50)
    statuses = [r[0] for r in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 1, f"no 503 with 12 concurrent jobs, 1 slot and queue_max 2: {statuses}"
    assert statuses.count(200) >= 3, statuses  # one running + two queued are always accepted
    for status, headers, body, secs in results:
        if status == 503:
            assert headers.get("Retry-After", "").isdigit(), dict(headers)
            assert one_line(body.decode()), body
            assert secs < 2, "a full queue must refuse at once"
    assert st.metric("refract_bus_jobs_total", service="image", outcome="unavailable") == statuses.count(503)
    harness.MEASUREMENTS.append(f"queue_max 2, 1 slot, 12 concurrent: {statuses.count(200)} x 200, "
                                f"{statuses.count(503)} x 503")


def _stop_with_its_credit(st, w):
    """SIGSTOPs worker w once the gateway has its credit back. The worker
    gives it back after its REPLY: stopped before the gateway has it, the
    next job waits in the gateway's queue (a 504 or 503 too, but not the
    case these tests are about: a job out on a silent worker)."""
    deadline = time.monotonic() + 5
    while (st.metric("refract_bus_worker_credit", service="image") or 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert st.metric("refract_bus_worker_credit", service="image") == 1
    w.signal(signal.SIGSTOP)

@pytest.mark.timeout_s(60)
@pytest.mark.parametrize("liveness", [100, 3], ids=["worker-alive", "worker-expired"])
def test_job_deadline_gives_504(make_stack, media, tmp_path, liveness):
    st = make_stack(_vhosts(media), workers=1, image_worker={"jobs": 1},
                    bus={"job_timeout": "1s", "liveness": liveness})
    w = st.workers[0]
    assert st.get(FAST).status_code == 200
    _stop_with_its_credit(st, w)
    try:
        result = {}

        def slow_one():
            t0 = time.monotonic()
            r = st.get(FAST, timeout=10)
            result.update(status=r.status_code, text=r.text, secs=time.monotonic() - t0, headers=r.headers)

        t = threading.Thread(target=slow_one, daemon=True)
        t.start()
        # the gateway keeps serving meanwhile
        time.sleep(0.3)
        t1 = time.monotonic()
        assert st.get("/hello.txt").status_code == 200
        assert time.monotonic() - t1 < 0.5
        t.join(10)
        assert result, "the image request never finished"
        assert result["status"] == 504, result
        assert one_line(result["text"]), result["text"]
        assert 0.9 <= result["secs"] < 2.5, f"504 after {result['secs']:.2f}s with job_timeout 1s"
        assert st.metric("refract_bus_jobs_total", service="image", outcome="timeout") == 1
    finally:
        w.signal(signal.SIGCONT)
    # The worker comes back (or was never gone) and resizes work again.
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline:
        status = st.get(FAST).status_code
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200
    st.wait_workers(1, timeout=5)
    if liveness == 100:
        # the job it got while stopped was answered late, as "past the deadline"
        assert metric_value(st.worker_metrics(w), "refract_worker_jobs_total", service="image", status="504") == 1


@pytest.mark.timeout_s(30)
def test_worker_started_after_gateway_joins(make_stack, media, tmp_path):
    st = make_stack(_vhosts(media), workers=0)
    assert st.workers_connected() == 0
    assert st.get(FAST).status_code == 503
    t0 = time.monotonic()
    st.add_worker(wait=False)
    st.wait_workers(1, timeout=5)
    harness.MEASUREMENTS.append(f"late worker joined in {time.monotonic() - t0:.2f}s (incl. process start)")
    r = st.get(FAST)
    assert r.status_code == 200
    assert (image_info(r.content, str(tmp_path))["width"]) == 100
    assert "ready (capacity 2" in st.gw.log()


@pytest.mark.timeout_s(60)
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_worker_rejoins_restarted_gateway(make_stack, media, tmp_path, how):
    st = make_stack(_vhosts(media), workers=1)
    w = st.workers[0]
    assert st.get(FAST).status_code == 200
    old = st.gw
    if how == "sigterm":
        old.signal(signal.SIGTERM)
        assert old.popen.wait(10) == 0
    else:
        old.kill9()
    time.sleep(0.5)
    assert w.alive(), "the worker died with its gateway"
    t0 = time.monotonic()
    st.start_gateway()
    st.wait_workers(1, timeout=5)
    took = time.monotonic() - t0
    harness.MEASUREMENTS.append(f"worker rejoined a gateway restarted by {how} in {took:.2f}s")
    r = st.get(FAST)
    assert r.status_code == 200
    assert image_info(r.content, str(tmp_path))["width"] == 100
    assert metric_value(st.worker_metrics(w), "refract_worker_bus_reconnects_total", service="image") >= 1


# ---- more of docs/operations.md ---------------------------------------------------

@pytest.mark.timeout_s(30)
def test_worker_started_before_gateway(make_stack, media, tmp_path):
    st = make_stack(_vhosts(media), start=False)
    w = st.add_worker(wait=False)
    time.sleep(1.0)  # it keeps trying to reach a broker that is not there yet
    assert w.alive()
    st.start_gateway()
    st.wait_workers(1, timeout=5)
    r = st.get(FAST)
    assert r.status_code == 200


@pytest.mark.timeout_s(30)
def test_kill9_idle_worker_is_forgotten_after_liveness(make_stack, media):
    st = make_stack(_vhosts(media), workers=1, bus={"liveness": 5})  # 100ms x 5 = 0.5 s
    st.workers[0].kill9()
    t0 = time.monotonic()
    st.wait_workers(0, timeout=5)
    took = time.monotonic() - t0
    assert took < 4, f"a dead worker was still counted {took:.2f}s later (expiry 0.5 s)"
    assert st.metric("refract_bus_worker_deaths_total", service="image") == 1
    r = st.get(FAST)
    assert r.status_code == 503 and r.headers.get("Retry-After")


@pytest.mark.timeout_s(120)
def test_sigterm_worker_under_load_is_invisible(make_stack, media):
    st = make_stack(_vhosts(media), workers=2, image_worker={"jobs": 2}, bus={"job_timeout": "30s"})
    victim = st.workers[0]

    def stopper():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if (metric_value(st.worker_metrics(victim), "refract_worker_jobs_inflight", service="image") or 0) >= 1:
                    break
            except Exception:
                pass
            time.sleep(0.02)
        victim.expected_exit = True
        victim.signal(signal.SIGTERM)

    k = threading.Thread(target=stopper, daemon=True)
    k.start()
    results = _fire(st, MEDIUM, 20, timeout=40)
    k.join(15)
    assert victim.popen.wait(15) == 0, "a worker stopped with SIGTERM must exit 0"
    statuses = [r[0] for r in results]
    assert statuses == [200] * 20, [(r[0], r[2][:100]) for r in results if r[0] != 200]
    assert "stopped" in victim.log()
    st.wait_workers(1, timeout=5)


def _h2_frame(ftype, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


@pytest.mark.timeout_s(40)
@pytest.mark.parametrize("how", [
    "http1-close",
    "http2-close",
    "http2-rst_stream",
])
def test_client_leaving_abandons_its_job(make_stack, media, how):
    st = make_stack(_vhosts(media), workers=1, image_worker={"jobs": 1},
                    bus={"job_timeout": "20s", "liveness": 100})
    w = st.workers[0]
    w.signal(signal.SIGSTOP)
    try:
        s = socket.create_connection(("127.0.0.1", st.port), timeout=5)
        if how.startswith("http1"):
            s.sendall(f"GET {FAST} HTTP/1.1\r\nHost: img.test\r\n\r\n".encode())
        else:
            block = b"\x82\x86" + harness._hpack_literal(4, FAST) + harness._hpack_literal(1, "img.test")
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0) + _h2_frame(1, 5, 1, block))
        time.sleep(0.5)
        assert st.metric("refract_bus_jobs_inflight", service="image") == 1
        if how == "http2-rst_stream":
            s.sendall(_h2_frame(3, 0, 1, (8).to_bytes(4, "big")))  # CANCEL
            time.sleep(0.3)
        s.close()  # the client goes away while the job is on the stopped worker
        deadline = time.monotonic() + 5
        cancelled = None
        while time.monotonic() < deadline:
            cancelled = st.metric("refract_bus_jobs_total", service="image", outcome="cancelled")
            if cancelled == 1:
                break
            time.sleep(0.05)
        assert cancelled == 1, "the abandoned job was not cancelled within 5 s (job_timeout 20 s)"
        assert st.metric("refract_http_requests_total", vhost="img.test", status="0") == 1
        assert st.metric("refract_http_requests_inflight") == 0
    finally:
        w.signal(signal.SIGCONT)
    # the cancelled job's slot comes back when the worker answers it
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline:
        status = st.get(FAST, timeout=10).status_code
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200
    time.sleep(0.3)
    assert st.metric("refract_bus_jobs_inflight", service="image") == 0


@pytest.mark.timeout_s(40)
def test_drain_lets_image_jobs_finish(make_stack, media, tmp_path):
    st = make_stack(_vhosts(media), workers=1, image_worker={"jobs": 1},
                    bus={"job_timeout": "10s", "liveness": 100}, gateway={"drain_timeout": "8s"})
    w = st.workers[0]
    w.signal(signal.SIGSTOP)
    result = {}

    def one():
        r = st.get(FAST, timeout=20)
        result.update(status=r.status_code, body=r.content)

    t = threading.Thread(target=one, daemon=True)
    t.start()
    time.sleep(0.5)
    st.gw.signal(signal.SIGTERM)
    time.sleep(0.5)
    st.gw.signal(signal.SIGTERM)  # a second SIGTERM changes nothing
    time.sleep(0.5)
    assert st.gw.alive(), "the gateway did not wait for the image job"
    w.signal(signal.SIGCONT)
    t.join(15)
    assert result.get("status") == 200, result
    assert image_info(result["body"], str(tmp_path))["width"] == 100
    assert st.gw.popen.wait(10) == 0


@pytest.mark.timeout_s(60)
def test_worker_shared_by_two_gateways(make_stack, media, tmp_path):
    a = make_stack(_vhosts(media), workers=0)
    b = make_stack(_vhosts(media), workers=0)
    cfg = json.loads(json.dumps(a.config))
    cfg["bus"]["connect"] = [a.config["bus"]["endpoint"], b.config["bus"]["endpoint"]]
    mport = harness.free_port()
    cfg["image_worker"]["metrics_listen"] = f"127.0.0.1:{mport}"
    path = a.write_config(cfg, str(tmp_path / "shared-worker.yaml"))
    w = harness.Proc("shared-worker", [harness.WORKER_BIN, "-c", path], str(tmp_path / "shared-worker.log"),
                     harness.REPO)
    w.metrics_port = mport
    a.workers.append(w)  # stopped with stack a
    a.wait_workers(1)
    b.wait_workers(1)
    assert a.get(FAST).status_code == 200
    assert b.get(FAST).status_code == 200
    # one gateway goes away: the worker keeps serving the other
    b.gw.signal(signal.SIGTERM)
    assert b.gw.popen.wait(10) == 0
    for _ in range(3):
        assert a.get(FAST).status_code == 200
        time.sleep(0.3)
    assert metric_value(a.worker_metrics(w), "refract_worker_jobs_total", service="image") == 5


# ---- a service whose only worker died ----------------------------------------------

@pytest.mark.timeout_s(40)
def test_kill9_only_worker_next_request_gets_503_quickly(make_stack, media):
    # liveness stays long (5 s in the harness): the broker must not need it to notice
    st = make_stack(_vhosts(media), workers=1, bus={"job_timeout": "30s", "no_worker_grace": "1s"})
    assert st.get(FAST).status_code == 200
    st.workers[0].kill9()
    time.sleep(0.05)
    t0 = time.monotonic()
    r = st.get(FAST, timeout=40)
    took = time.monotonic() - t0
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers.get("Retry-After", "").isdigit(), dict(r.headers)
    assert one_line(r.text), r.text
    assert took < 4, f"503 after {took:.2f}s (no_worker_grace 1s, job_timeout 30s)"
    assert st.metric("refract_bus_jobs_total", service="image", outcome="timeout") is None


@pytest.mark.timeout_s(40)
def test_kill9_only_worker_with_job_in_flight_gets_503(make_stack, media):
    st = make_stack(_vhosts(media), workers=1, image_worker={"jobs": 1},
                    bus={"job_timeout": "30s", "no_worker_grace": "1s", "retries": 1})
    w = st.workers[0]
    assert st.get(FAST).status_code == 200
    _stop_with_its_credit(st, w)  # the job is dispatched and stays unanswered
    result = {}

    def one():
        t0 = time.monotonic()
        r = st.get(FAST, timeout=40)
        result.update(status=r.status_code, headers=r.headers, text=r.text, secs=time.monotonic() - t0)

    t = threading.Thread(target=one, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and st.metric("refract_bus_jobs_inflight", service="image") != 1:
        time.sleep(0.05)
    assert st.metric("refract_bus_jobs_inflight", service="image") == 1
    t_kill = time.monotonic()
    w.kill9()
    t.join(35)
    assert result, "the request never finished"
    assert result["status"] == 503, result
    assert result["headers"].get("Retry-After", "").isdigit(), dict(result["headers"])
    assert time.monotonic() - t_kill < 5, f"503 {time.monotonic() - t_kill:.2f}s after the kill"
    assert st.metric("refract_bus_job_retries_total", service="image") == 1
    assert st.metric("refract_bus_jobs_total", service="image", outcome="timeout") is None


@pytest.mark.timeout_s(40)
def test_worker_back_within_grace_serves_queued_job(make_stack, media):
    st = make_stack(_vhosts(media), workers=1, bus={"job_timeout": "30s", "no_worker_grace": "4s"})
    assert st.get(FAST).status_code == 200
    st.workers[0].kill9()
    result = {}

    def one():
        r = st.get(FAST, timeout=40)
        result.update(status=r.status_code)

    t = threading.Thread(target=one, daemon=True)
    t.start()
    time.sleep(0.5)
    st.add_worker(wait=False)
    t.join(20)
    assert result.get("status") == 200, result


@pytest.mark.timeout_s(90)
def test_two_gateways_never_overfill_a_shared_worker(make_stack, media, tmp_path):
    """RFB/1.1 credit: two gateways keep one 2-thread worker busy at once;
    it never holds a job it has no thread for, and both are served."""
    a = make_stack(_vhosts(media), workers=0)
    b = make_stack(_vhosts(media), workers=0)
    cfg = json.loads(json.dumps(a.config))
    cfg["bus"]["connect"] = [a.config["bus"]["endpoint"], b.config["bus"]["endpoint"]]
    cfg["image_worker"]["jobs"] = 2
    mport = harness.free_port()
    cfg["image_worker"]["metrics_listen"] = f"127.0.0.1:{mport}"
    path = a.write_config(cfg, str(tmp_path / "shared-worker.yaml"))
    w = harness.Proc("shared-worker", [harness.WORKER_BIN, "-c", path], str(tmp_path / "shared-worker.log"),
                     harness.REPO)
    w.metrics_port = mport
    a.workers.append(w)
    a.wait_workers(1)
    b.wait_workers(1)
    # idle, the two threads are split between the gateways
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (
            a.metric("refract_bus_worker_credit", service="image") == 1
            and b.metric("refract_bus_worker_credit", service="image") == 1):
        time.sleep(0.05)
    assert a.metric("refract_bus_worker_credit", service="image") == 1
    assert b.metric("refract_bus_worker_credit", service="image") == 1
    with cf.ThreadPoolExecutor(max_workers=2) as ex:
        fa = ex.submit(_fire, a, MEDIUM, 8, 40)
        fb = ex.submit(_fire, b, MEDIUM, 8, 40)
        ra, rb = fa.result(60), fb.result(60)
    assert [r[0] for r in ra] == [200] * 8, [(r[0], r[2][:100]) for r in ra if r[0] != 200]
    assert [r[0] for r in rb] == [200] * 8, [(r[0], r[2][:100]) for r in rb if r[0] != 200]
    assert metric_value(a.worker_metrics(w), "refract_worker_jobs_total", service="image") == 16
    assert metric_value(a.worker_metrics(w), "refract_worker_queue_peak", service="image") == 0
    # one gateway alone gets both threads (the other's idle credit is reclaimed)
    ra = _fire(a, MEDIUM, 6, 40)
    assert [r[0] for r in ra] == [200] * 6
    assert metric_value(a.worker_metrics(w), "refract_worker_queue_peak", service="image") == 0
    harness.MEASUREMENTS.append("two gateways x 8 concurrent resizes on one shared 2-thread worker: "
                                "16 x 200, no job ever waited inside the worker")
