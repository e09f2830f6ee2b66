"""Prometheus metrics of the gateway and the image worker, /healthz and the
admin port."""
import subprocess
import time

import pytest

import harness
from harness import http, metric_value, parse_metrics, rss_kb

N_FILE, N_WEB, N_IMG, N_404, N_400, N_CACHED = 5, 4, 3, 2, 1, 5


BODY_BYTES = {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, origin, media):
    st = harness.Stack(
        str(tmp_path_factory.mktemp("metrics")),
        vhosts=[
            # Uncached: every image request is one job (the bus metrics).
            {"name": "files.test", "default": True, "origin": "file://" + media["dir"], "cache": {"enable": False}},
            # Uncached: every request is one origin request (the origin metrics).
            {"name": "web.test", "origin": origin.url, "cache": {"enable": False}},
            # Cached for 60 s whatever the file's age (override_origin also
            # skips the Last-Modified heuristic): 1 miss, then hits.
            {"name": "cached.test", "origin": origin.url,
             "cache": {"override_origin": True, "ttl": {"res2xx": 60}}},
            {"name": "down.test", "origin": f"http://127.0.0.1:{harness.free_port()}"},
        ],
        workers=1,
    )

    def get(path, host, status):
        r = st.get(path, host=host)
        assert r.status_code == status
        BODY_BYTES[host] = BODY_BYTES.get(host, 0) + len(r.content)

    for _ in range(N_FILE):
        get("/hello.txt", "files.test", 200)
    for _ in range(N_WEB):
        get("/hello.txt", "web.test", 200)
    for _ in range(N_IMG):
        get("/photo.jpg/dims/resize/50x50", "files.test", 200)
    for _ in range(N_404):
        get("/nope.txt", "web.test", 404)
    for _ in range(N_400):
        get("/photo.jpg/dims/resize/0x0", "files.test", 400)
    get("/hello.txt", "down.test", 502)
    for _ in range(N_CACHED):
        get("/hello.txt", "cached.test", 200)
    yield st
    st.close()


def _settled(st, name, expected, timeout=3, **labels):
    """Polls until the metric equals expected (counters land when the
    request pool is freed, just after the client has its response)."""
    deadline = time.monotonic() + timeout
    v = None
    while time.monotonic() < deadline:
        v = metric_value(st.metrics(), name, **labels)
        if v == expected:
            return v
        time.sleep(0.05)
    return v


def _promtool(text):
    return subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)


def test_promtool_accepts_gateway_metrics(stack):
    r = http("GET", stack.admin("/metrics"))
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    p = _promtool(r.text)
    assert p.returncode == 0, f"promtool: {p.stdout.decode()}{p.stderr.decode()}"


def test_promtool_accepts_worker_metrics(stack):
    for w in stack.workers:
        text = stack.worker_metrics(w)
        p = _promtool(text)
        assert p.returncode == 0, f"promtool ({w.name}): {p.stdout.decode()}{p.stderr.decode()}"


def test_http_requests_total(stack):
    def g(vhost, method, status):
        return metric_value(stack.metrics(), "refract_http_requests_total", vhost=vhost, method=method,
                            status=status)

    assert _settled(stack, "refract_http_requests_total", N_FILE + N_IMG, vhost="files.test", method="GET",
                    status="200") == N_FILE + N_IMG
    assert g("web.test", "GET", "200") == N_WEB
    assert g("web.test", "GET", "404") == N_404
    assert g("files.test", "GET", "400") == N_400
    # every sample carries exactly the three labels
    for name, labels, _ in parse_metrics(stack.metrics()):
        if name == "refract_http_requests_total":
            assert set(labels) == {"vhost", "method", "status"}, labels


def test_http_duration_histogram(stack):
    text = stack.metrics()
    for vhost, n in (("files.test", N_FILE + N_IMG + N_400), ("web.test", N_WEB + N_404)):
        count = _settled(stack, "refract_http_request_duration_seconds_count", n, vhost=vhost)
        assert count == n
        text = stack.metrics()
        total = metric_value(text, "refract_http_request_duration_seconds_sum", vhost=vhost)
        assert 0 < total < 30 * n
        buckets = [(l["le"], v) for name, l, v in parse_metrics(text)
                   if name == "refract_http_request_duration_seconds_bucket" and l.get("vhost") == vhost]
        assert len(buckets) >= 5
        assert buckets[-1][0] == "+Inf" and buckets[-1][1] == n
        values = [v for _, v in buckets]
        assert values == sorted(values), f"buckets not cumulative: {buckets}"
        bounds = [float(le) for le, _ in buckets[:-1]]
        assert bounds == sorted(bounds)


def test_response_body_bytes_total(stack):
    for host, n in BODY_BYTES.items():
        assert _settled(stack, "refract_http_response_body_bytes_total", n, vhost=host) == n, host


def test_origin_errors_total(stack):
    assert metric_value(stack.metrics(), "refract_origin_errors_total", vhost="down.test", reason="unreachable") == 1
    assert metric_value(stack.metrics(), "refract_origin_errors_total", vhost="web.test") is None


def test_origin_head_histogram(stack):
    text = stack.metrics()
    n = N_WEB + N_404
    assert metric_value(text, "refract_origin_response_head_seconds_count", vhost="web.test") == n
    assert metric_value(text, "refract_origin_response_head_seconds_bucket", vhost="web.test", le="+Inf") == n


def test_origin_requests_total(stack):
    assert metric_value(stack.metrics(), "refract_origin_requests_total", vhost="web.test", kind="http") == \
        N_WEB + N_404
    # file origin: plain files and image sources (the 400 never reaches the origin)
    assert metric_value(stack.metrics(), "refract_origin_requests_total", vhost="files.test", kind="file") == \
        N_FILE + N_IMG


def test_cache_metrics(stack):
    assert _settled(stack, "refract_cache_requests_total", N_CACHED - 1, vhost="cached.test", result="hit") == \
        N_CACHED - 1
    text = stack.metrics()
    assert metric_value(text, "refract_cache_requests_total", vhost="cached.test", result="miss") == 1
    assert metric_value(text, "refract_origin_requests_total", vhost="cached.test", kind="http") == 1
    assert metric_value(text, "refract_cache_fills_total", vhost="cached.test", result="stored") == 1
    hello = BODY_BYTES["cached.test"] // N_CACHED
    assert metric_value(text, "refract_cache_fill_bytes_total", vhost="cached.test") == hello
    assert metric_value(text, "refract_cache_client_body_bytes_total", vhost="cached.test", source="cache") == \
        hello * (N_CACHED - 1)
    assert metric_value(text, "refract_cache_client_body_bytes_total", vhost="cached.test", source="origin") == hello
    assert metric_value(text, "refract_cache_objects") >= 1
    assert metric_value(text, "refract_cache_bytes", tier="disk") >= hello
    assert metric_value(text, "refract_cache_bytes", tier="memory") >= hello
    # the uncached vhost and the file origin say so
    assert metric_value(text, "refract_cache_requests_total", vhost="web.test", result="bypass") == N_WEB + N_404


def test_bus_metrics(stack):
    text = stack.metrics()
    assert metric_value(text, "refract_bus_jobs_total", service="image", outcome="ok") == N_IMG
    assert metric_value(text, "refract_bus_job_duration_seconds_count", service="image") == N_IMG
    assert 0 < metric_value(text, "refract_bus_job_duration_seconds_sum", service="image") < 10 * N_IMG
    assert metric_value(text, "refract_bus_job_duration_seconds_bucket", service="image", le="+Inf") == N_IMG
    assert metric_value(text, "refract_bus_workers", service="image") == 1
    assert metric_value(text, "refract_bus_worker_capacity", service="image") == 2
    assert metric_value(text, "refract_bus_queue_depth", service="image") == 0
    assert metric_value(text, "refract_bus_jobs_inflight", service="image") == 0


def test_process_memory_metrics(stack):
    for proc, text in [(stack.gw, stack.metrics())] + [(w, stack.worker_metrics(w)) for w in stack.workers]:
        v = metric_value(text, "refract_process_resident_memory_bytes")
        assert v is not None, f"{proc.name}: no refract_process_resident_memory_bytes"
        real = rss_kb(proc.pid) * 1024
        assert 1 << 20 < v < 1 << 30, f"{proc.name}: {v}"
        assert 0.5 * real < v < 2 * real, f"{proc.name}: metric {v}, /proc says {real}"
        start = metric_value(text, "refract_process_start_time_seconds")
        assert start is not None and abs(start - time.time()) < 3600
        assert metric_value(text, "refract_process_cpu_seconds_total") >= 0


def test_worker_jobs_total(stack):
    w = stack.workers[0]
    text = stack.worker_metrics(w)
    assert metric_value(text, "refract_worker_jobs_total", service="image", status="200") == N_IMG
    assert metric_value(text, "refract_worker_job_duration_seconds_count", service="image") == N_IMG
    assert metric_value(text, "refract_worker_jobs_inflight", service="image") == 0


def test_healthz(stack):
    r = http("GET", stack.admin("/healthz"))
    assert r.status_code == 200
    assert r.text.strip() == "ok"
    for w in stack.workers:
        r = http("GET", f"http://127.0.0.1:{w.metrics_port}/healthz")
        assert r.status_code == 200
        assert r.text.strip() == "ok"


@pytest.mark.parametrize("path", ["/", "/nope", "/metrics/x", "/healthzz"])
def test_admin_unknown_path_is_404(stack, path):
    assert http("GET", stack.admin(path)).status_code == 404
    for w in stack.workers:
        assert http("GET", f"http://127.0.0.1:{w.metrics_port}{path}").status_code == 404


def test_admin_port_is_not_the_public_port(stack):
    # /metrics on the public port is an ordinary (missing) file, not the metrics
    r = stack.get("/metrics", host="files.test")
    assert r.status_code == 404
    assert "refract_http_requests_total" not in r.text
