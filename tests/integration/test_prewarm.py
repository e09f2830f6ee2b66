"""refract-prewarm (issue 10, part 1): pre-warm messages from a Kafka topic
(librdkafka's mock cluster, build/bin/refract-kafka-mock), produced with
python3-confluent-kafka, requested through the gateway so that they are
cached, with one completion or failure event per message read back with
kcat (KafkaMock.messages), malformed and failed messages in the dead-letter
topic with their reason, offsets committed only after the result, and a
consumer killed mid-way whose partitions another member of the group takes
over.

The mock's group coordinator delays a new group's first assignment by 3 s
and never completes a join with session.timeout.ms of 2 s or less: the
consumers here use 3 s."""
import json
import os
import signal
import subprocess
import threading
import time

import pytest

import harness

TOPIC, EVENTS, DLQ = "prewarm", "prewarm-events", "prewarm-dlq"
OLD = time.time() - 30 * 86400  # origin files this old get the full heuristic TTL


@pytest.fixture
def kafka(tmp_path):
    k = harness.KafkaMock(str(tmp_path), brokers=1, topics=[TOPIC, EVENTS, DLQ])
    yield k
    k.stop()


@pytest.fixture
def site(tmp_path):
    """An origin with 300 small text files and one small JPEG."""
    root = tmp_path / "site"
    (root / "t").mkdir(parents=True)
    for i in range(300):
        p = root / "t" / f"{i}.txt"
        p.write_text(f"pre-warm file {i}\n" * 20)
        os.utime(p, (OLD, OLD))
    img = str(root / "img.jpg")
    subprocess.run(["vips", "black", img + "[Q=80]", "160", "120"], check=True, timeout=30)
    os.utime(img, (OLD, OLD))
    o = harness.Origin(str(root))
    yield o
    o.close()


def _stack(make_stack, site):
    return make_stack([{"name": "a.test", "default": True, "origin": site.url},
                       {"name": "b.test", "origin": site.url}], workers=1)


def _produce(kafka, values, partition=None):
    """Produces values to TOPIC: all to `partition`, or spread over the 4
    partitions in turn (keyless messages would stick to one partition)."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": kafka.bootstrap, "message.max.bytes": 200000})
    for i, v in enumerate(values):
        if isinstance(v, str):
            v = v.encode()
        p.produce(TOPIC, v, partition=i % 4 if partition is None else partition)
    assert p.flush(15) == 0


def _prewarm(st, kafka, **over):
    section = {"brokers": kafka.bootstrap, "topic": TOPIC, "events_topic": EVENTS, "dead_letter_topic": DLQ,
               "session_timeout": "3s", "concurrency": 4, "retries": 2}
    section.update(over)
    return st.add_prewarm(**section)


def _m(st, p, name="refract_prewarm_messages_total", **labels):
    return st.scheduler_metric(p, name, **labels) or 0


def _wait(cond, secs, what):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out ({secs}s) waiting for {what}")


def _by_key(msgs):
    out = {}
    for m in msgs:
        out.setdefault(m["key"], []).append(json.loads(m["payload"]))
    return out


def _hit(st, host, path):
    r = st.get(path, host=host)
    return r.status_code, r.headers.get("Cache-Status", "")


def test_prewarm_caches_sends_events_and_commits(kafka, make_stack, site):
    """200 messages (plain URLs, /dims URLs, JSON with id, vhost, headers,
    priority): every URL is then a cache hit for a client, each message has
    exactly one completion event (keyed by its id) that says what was
    stored, and the offsets are committed: a restarted member of the group
    processes nothing again."""
    st = _stack(make_stack, site)
    msgs, urls = [], []  # urls: (host, path, id or None)
    for i in range(200):
        if i % 4 == 3:
            path = f"/img.jpg/dims/resize/{20 + i // 4}x"
        else:
            path = f"/t/{i}.txt"
        if i % 10 == 0:  # JSON naming the vhost; the URL's host is not a vhost
            msgs.append(json.dumps({"url": "https://cdn.example.com" + path, "vhost": "b.test", "id": f"job-{i}",
                                    "priority": i % 3, "headers": {"X-Prewarm": "yes"}}))
            urls.append(("b.test", path, f"job-{i}"))
        elif i % 5 == 0:
            msgs.append(json.dumps({"url": "http://a.test" + path, "id": f"job-{i}"}))
            urls.append(("a.test", path, f"job-{i}"))
        else:
            msgs.append("http://a.test" + path + "\n")
            urls.append(("a.test", path, None))
    _produce(kafka, msgs)
    t0 = time.monotonic()
    p = _prewarm(st, kafka)
    _wait(lambda: _m(st, p, outcome="done") >= 200, 40, "200 messages done\n" + p.log())
    elapsed = time.monotonic() - t0
    assert _m(st, p, outcome="dead_letter") == 0 and _m(st, p, outcome="retried") == 0
    assert _m(st, p, "refract_prewarm_inflight") == 0
    assert _m(st, p, "refract_prewarm_duration_seconds_count") == 200
    harness.MEASUREMENTS.append(f"prewarm: 200 messages (150 files, 50 resizes) in {elapsed:.1f}s from the start "
                                "(3 s of it the mock's first group assignment)")

    got = _by_key(kafka.messages(EVENTS))
    assert len(got) == 200 and all(len(v) == 1 for v in got.values()), {k: len(v) for k, v in got.items() if len(v) > 1}
    by_path = {(e["host"], e["url"].split("://", 1)[1].split("/", 1)[1]): e for [e] in got.values()}
    for host, path, mid in urls:
        e = by_path[(host, path[1:])]
        assert e["status"] == "done" and e["http_status"] == 200 and e["bytes"] > 0, e
        assert "stored" in e["cache_status"], e
        if mid is not None:
            assert e["id"] == mid
        else:
            assert e["id"] == f"{TOPIC}:{e['partition']}:{e['offset']}"
        status, cs = _hit(st, host, path)
        assert status == 200 and cs.startswith("refract; hit"), (host, path, cs)
    assert len(kafka.messages(DLQ)) == 0

    # The 50 resizes went on the bus as background jobs (X-Refract-Priority
    # from refract-prewarm); a client's resize is live.
    def bus(name, **labels):
        return harness.metric_value(st.metrics(), name, service="image", **labels) or 0
    assert bus("refract_bus_background_jobs_total", event="submitted") == 50
    assert bus("refract_bus_jobs_total", outcome="ok") == 50
    status, cs = _hit(st, "a.test", "/img.jpg/dims/resize/7x")
    assert status == 200 and cs.startswith("refract; fwd=miss"), cs
    assert bus("refract_bus_jobs_total", outcome="ok") == 51
    assert bus("refract_bus_background_jobs_total", event="submitted") == 50

    # Committed: a new member of the group starts after the last message.
    p.expected_exit = True
    rc, problem = p.stop()
    assert rc == 0 and problem is None, p.log()
    p2 = _prewarm(st, kafka)
    _wait(lambda: _m(st, p2, "refract_prewarm_partitions") == 4, 20, "the 4 partitions\n" + p2.log())
    time.sleep(1.5)
    assert _m(st, p2, outcome="done") == 0 and _m(st, p2, outcome="dead_letter") == 0
    assert len(kafka.messages(EVENTS)) == 200


MALFORMED = [
    (b"not a url", "not a URL"),
    (b"ftp://a.test/t/1.txt", "scheme 'ftp' is not http or https"),
    (b'{"id": "no-url", "vhost": "a.test"}', 'without a "url"'),
    (b'{"url": 5}', 'without a "url"'),
    (b'{"url": "http://a.test/t/1.txt", "headers": {"X-A": "1\\r\\nEvil: 1"}}', "control byte"),
    (b'{"url": "http://a.test/t/1.txt", "headers": {"Host": "b.test"}}', "header Host is not allowed"),
    (b'{"url": "http://a.test/t/1.txt", "headers": {"X-Refract-Priority": "live"}}',
     "header X-Refract-Priority is not allowed"),
    (b'{"url": "http://a.test/t/2.txt", "priority": "high"}', '"priority" must be an integer'),
    (b"{not json", "invalid JSON"),
    (b"http://a.test/" + b"a" * 5000, "URL too long"),
    (b"http://a.test/" + b"b" * 70000, "message too large"),
    (b"\xff\xfe\x00binary", "not a URL"),
    (b"", "empty message"),
    (b"http://user@a.test/t/1.txt", "userinfo"),
    (b"http://a.test/t/1 2.txt", "space, control or non-ASCII"),
]


def test_malformed_and_failed_go_to_dead_letter(kafka, make_stack, site):
    """Malformed messages go to the dead-letter topic at once with their
    reason, and a failure event each; an origin 404 goes there after one
    attempt, a 503 after its retries; good messages after them on the same
    partition are still processed (in order, the partition not stalled)."""
    st = _stack(make_stack, site)
    failing = [(b"http://a.test/missing.txt", "HTTP 404", 1), (b"http://a.test/_status/503", "HTTP 503", 3)]
    good = [f"http://a.test/t/{200 + i}.txt".encode() for i in range(5)]
    values = [v for v, _ in MALFORMED] + [v for v, _, _ in failing] + good
    _produce(kafka, values, partition=0)
    p = _prewarm(st, kafka)
    n_bad = len(MALFORMED) + len(failing)
    _wait(lambda: _m(st, p, outcome="done") == 5 and _m(st, p, outcome="dead_letter") == n_bad, 30,
          "every message\n" + p.log())
    assert _m(st, p, outcome="retried") == 2
    dlq = kafka.messages(DLQ)
    assert len(dlq) == n_bad
    envs = sorted((json.loads(m["payload"]) for m in dlq), key=lambda e: e["offset"])
    for i, e in enumerate(envs):
        assert e["offset"] == i and e["partition"] == 0 and e["topic"] == TOPIC
    for e, (value, why) in zip(envs, MALFORMED):
        assert e["reason"].startswith("malformed: ") and why in e["reason"], (e["reason"], why)
        assert e["attempts"] == 0
        if len(value) <= 65536 and value.startswith(b"\xff"):
            assert e["original"] is None and e["original_base64"]
        elif len(value) > 65536:
            assert e["original_truncated"] is True and e["original_bytes"] == len(value)
        else:
            assert e["original"] == value.decode()
    assert envs[2]["id"] == "no-url"  # a refused message keeps its own id
    for e, (value, why, attempts) in zip(envs[len(MALFORMED):], failing):
        assert why in e["reason"] and e["attempts"] == attempts and e["url"] == value.decode(), e
    events = sorted((json.loads(m["payload"]) for m in kafka.messages(EVENTS)), key=lambda e: e["offset"])
    assert [e["status"] for e in events] == ["failed"] * n_bad + ["done"] * 5
    assert all(e["dead_letter"] is True and e["reason"] for e in events[:n_bad])
    assert [e["offset"] for e in events] == list(range(n_bad + 5))
    for v in good:
        assert _hit(st, "a.test", v.decode()[len("http://a.test"):])[1].startswith("refract; hit")


@pytest.mark.timeout_s(90)
def test_killed_consumer_partitions_move(kafka, make_stack, site):
    """Two members share the topic; one is killed (-9) mid-way: the other
    takes its partitions over once the group's session timeout has passed,
    every message gets at least one event, every URL ends cached, and the
    duplicates are bounded by what the killed member had processed but not
    committed, at the rebalance the second member caused and when it died:
    each time at most `concurrency` messages being fetched plus 4 per
    partition waiting for its finisher (S_FINISH_MAX in pw_run.c)."""
    st = _stack(make_stack, site)
    paths = [f"/_delay?secs=0.1&n={i}" for i in range(200)]
    _produce(kafka, ["http://a.test" + p for p in paths])
    a = _prewarm(st, kafka, concurrency=2)
    _wait(lambda: _m(st, a, outcome="done") >= 20, 30, "the first member's first messages\n" + a.log())
    b = _prewarm(st, kafka, concurrency=2)
    _wait(lambda: _m(st, b, outcome="done") >= 10, 30, "the second member's first messages\n" + b.log())
    a_done = _m(st, a, outcome="done")
    a.kill9()
    assert a_done + _m(st, b, outcome="done") < 190, "too late a kill to test anything"
    _wait(lambda: _m(st, b, "refract_prewarm_partitions") == 4, 30, "the killed member's partitions\n" + b.log())
    _wait(lambda: len(_by_key(kafka.messages(EVENTS))) == 200, 40, "an event for every message\n" + b.log())
    got = _by_key(kafka.messages(EVENTS))
    assert all(e["status"] == "done" for v in got.values() for e in v)
    assert {v[0]["url"] for v in got.values()} == {"http://a.test" + p for p in paths}
    dups = sum(len(v) - 1 for v in got.values())
    harness.MEASUREMENTS.append(f"prewarm: a member killed after {int(a_done)} messages: {dups} duplicate event(s) "
                                "of 200")
    # at most what A had in flight when the rebalance it caused began, and when it died
    assert dups <= 2 * (2 + 4 * 4), {k: len(v) for k, v in got.items() if len(v) > 1}
    for p in paths:
        assert _hit(st, "a.test", p)[1].startswith("refract; hit"), p


def _bus(st, name, **labels):
    return harness.metric_value(st.metrics(), name, service="image", **labels) or 0


@pytest.mark.timeout_s(90)
def test_background_job_waits_and_is_promoted_when_a_client_joins(make_stack, site):
    """What refract-prewarm's X-Refract-Priority header does at the gateway
    (no Kafka needed): with the one worker slot held (the worker stopped
    with a job on it), a background request's resize waits in the broker's
    background queue. Another background request for the same URL joins
    its cache fill and changes nothing; a client asking for it joins too,
    and the job is promoted to the live queue rather than leave the client
    behind every live job. Once the worker runs again, all are answered."""
    st = make_stack([{"name": "a.test", "default": True, "origin": site.url}], workers=1,
                    image_worker={"jobs": 1}, bus={"liveness": 100})
    w = st.workers[0]
    assert st.get("/img.jpg/dims/resize/10x", host="a.test").status_code == 200
    # SIGSTOP once the gateway has the worker's credit back, so the next job
    # is dispatched to the stopped worker and holds its one slot.
    _wait(lambda: _bus(st, "refract_bus_worker_credit") == 1, 5, "the worker's credit")
    w.signal(signal.SIGSTOP)
    results = {}

    def get(name, path, headers=None):
        r = st.get(path, host="a.test", headers=headers, timeout=40)
        results[name] = (r.status_code, r.headers.get("Cache-Status", ""))

    threads = []
    try:
        def start(name, path, headers=None):
            t = threading.Thread(target=get, args=(name, path, headers), daemon=True)
            t.start()
            threads.append(t)

        start("holder", "/img.jpg/dims/resize/11x")
        _wait(lambda: _bus(st, "refract_bus_jobs_inflight") == 1, 10, "the job on the stopped worker")
        start("background", "/img.jpg/dims/resize/12x", {"X-Refract-Priority": "background"})
        _wait(lambda: _bus(st, "refract_bus_queue_depth") == 1, 10, "the background job queued")
        assert _bus(st, "refract_bus_background_jobs_total", event="submitted") == 1
        assert _bus(st, "refract_bus_background_jobs_total", event="promoted") == 0
        start("background-2", "/img.jpg/dims/resize/12x", {"X-Refract-Priority": "background"})
        time.sleep(0.8)  # the gateway looks every 250 ms, the broker at each tick (50 ms at most)
        assert _bus(st, "refract_bus_background_jobs_total", event="promoted") == 0
        start("client", "/img.jpg/dims/resize/12x")
        _wait(lambda: _bus(st, "refract_bus_background_jobs_total", event="promoted") == 1, 5,
              "the background job promoted")
        assert _bus(st, "refract_bus_queue_depth") == 1  # still one job waiting: the client joined it
    finally:
        w.signal(signal.SIGCONT)
    for t in threads:
        t.join(45)
    assert {k: v[0] for k, v in results.items()} == {"holder": 200, "background": 200, "background-2": 200,
                                                     "client": 200}, results
    assert "collapsed" in results["client"][1] and "collapsed" in results["background-2"][1], results
    assert _bus(st, "refract_bus_jobs_total", outcome="ok") == 3


def test_events_webhook_through_the_outbox(kafka, make_stack, site):
    """prewarm.events_webhook: each message's event is also left for
    storgate's persistent outbox (STATE/outbox-in) before the offset is
    committed; with no scheduler running the events wait there, and once one
    starts each reaches the HTTP hook once, keyed by the message's id
    (Idempotency-Key), the same event as on the events topic."""
    import http.server
    got, lock = [], threading.Lock()

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                got.append((self.headers.get("Idempotency-Key"), json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        # the scheduler that delivers the outbox needs a storgate section (it may hold no bucket)
        st = make_stack([{"name": "a.test", "default": True, "origin": site.url}], workers=1, storgate={})
        ids = [f"wh-{i}" for i in range(12)]
        _produce(kafka, [json.dumps({"url": f"http://a.test/t/{i}.txt", "id": ids[i]}) for i in range(12)])
        p = _prewarm(st, kafka, events_webhook=f"http://127.0.0.1:{srv.server_address[1]}/events")
        _wait(lambda: _m(st, p, outcome="done") >= 12, 40, "12 messages done\n" + p.log())
        inbox = os.path.join(st.config["storgate_scheduler"]["state_dir"], "outbox-in")
        assert len([f for f in os.listdir(inbox) if f.endswith(".json")]) == 12
        time.sleep(0.3)
        assert got == []  # nobody delivers yet
        sched = st.add_scheduler()
        _wait(lambda: len(got) == 12, 30, "12 webhook events\n" + sched.log())
        assert sorted(k for k, _ in got) == sorted(ids)
        assert all(e["id"] == k and e["status"] == "done" for k, e in got), got
        topic = _by_key(kafka.messages(EVENTS))
        for k, e in got:
            assert topic[k] == [e], (k, topic.get(k), e)
    finally:
        srv.shutdown()
