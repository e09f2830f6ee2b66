"""refract-storgate-scheduler: Kafka webhook targets
(kafka://HOST:PORT[,HOST:PORT...]/TOPIC), delivered at least once through
the outbox by an idempotent producer, into librdkafka's mock cluster
(build/bin/refract-kafka-mock) and read back with kcat: the landing-zone
batch's events, each item's once by key; webhooks kept in the outbox while
every broker is down and delivered when they are back, also across a
restart of the scheduler; malformed kafka:// targets refused."""
import json
import os
import signal
import time

import pytest

import harness
from test_storgate import _drop, _landing, _tree, _wait

TOPIC = "storgate-events"


@pytest.fixture
def kafka(tmp_path):
    k = harness.KafkaMock(str(tmp_path), brokers=1, topics=[TOPIC])
    yield k
    k.stop()


def _stack(make_stack, tmp_path, target, **over):
    up, svc, sg = _landing(tmp_path, target, **over)
    st = make_stack([{"name": "a.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    storgate=sg)
    return up, svc, st


def _by_key(msgs):
    out = {}
    for m in msgs:
        out.setdefault(m["key"], []).append(json.loads(m["payload"]))
    return out


def _pending(st, s):
    return st.scheduler_metric(s, "refract_storgate_outbox_pending")


def _delivered(st, s):
    return st.scheduler_metric(s, "refract_storgate_webhooks_total", outcome="delivered") or 0


def test_landing_zone_events_into_kafka(make_stack, tmp_path, kafka):
    """The seed's landing zone with onItemCompleted = kafka://…/storgate-events:
    every item's event is in the topic exactly once, keyed by its
    idempotency key (= the payload's id), with the item's path; one key's
    messages stay on one partition."""
    up, svc, st = _stack(make_stack, tmp_path, f"kafka://{kafka.bootstrap}/{TOPIC}", chunk=4)
    files = _drop(up, 11)
    s = st.add_scheduler()
    s.signal(signal.SIGUSR1)
    _wait(lambda: _delivered(st, s) == 11, 30, "11 deliveries\n" + s.log())
    assert _tree(up) == {} and len(_tree(svc)) == 11
    msgs = kafka.messages(TOPIC)
    got = _by_key(msgs)
    assert len(msgs) == 11 and len(got) == 11, [m["key"] for m in msgs]
    for key, [p] in got.items():
        assert p["id"] == key and p["event"] == "onItemCompleted" and p["bucket"] == "image_landing_bucket"
        assert p["item"]["state"] == "file" and p["item"]["size"] > 0
    assert sorted(p["item"]["path"] for [p] in got.values()) == sorted("/image_landing/" + k for k in files)
    assert _pending(st, s) == 0
    assert "idempotent producer" in s.log()


def test_broker_down_then_up(make_stack, tmp_path, kafka):
    """Every broker goes down after a first delivery (the producer is
    connected): the next run's webhooks stay in the outbox and are retried;
    when the brokers are back every one arrives. Each key at least once,
    and at most twice (a second copy only where the idempotent producer
    could not know the first had arrived)."""
    up, svc, st = _stack(make_stack, tmp_path, f"kafka://{kafka.bootstrap}/{TOPIC}")
    first = _drop(up, 2, nested=False)
    s = st.add_scheduler()
    s.signal(signal.SIGUSR1)
    _wait(lambda: _delivered(st, s) == 2, 20, "the first 2 deliveries\n" + s.log())
    kafka.down()
    for i in range(6):
        p = os.path.join(up, f"late{i}.bin")
        with open(p, "wb") as f:
            f.write(harness.pattern_bytes(500 + i, seed=i + 50))
    s.signal(signal.SIGUSR1)
    _wait(lambda: _tree(up) == {} and len(_tree(svc)) == 8, 20, "the second run's items\n" + s.log())
    _wait(lambda: _pending(st, s) == 6, 10, "6 webhooks in the outbox")
    time.sleep(1.5)  # the brokers stay down: nothing leaves the outbox
    assert _pending(st, s) == 6 and _delivered(st, s) == 2
    _wait(lambda: (st.scheduler_metric(s, "refract_storgate_webhooks_total", outcome="retried") or 0) >= 1, 15,
          "a failed attempt\n" + s.log())
    kafka.up()
    _wait(lambda: _pending(st, s) == 0, 30, "an empty outbox\n" + s.log())
    got = _by_key(kafka.messages(TOPIC))
    paths = {p["item"]["path"] for ps in got.values() for p in ps}
    assert paths == {"/image_landing/" + k for k in first} | {f"/image_landing/late{i}.bin" for i in range(6)}
    assert len(got) == 8 and all(1 <= len(ps) <= 2 for ps in got.values()), {k: len(v) for k, v in got.items()}
    dups = sum(len(ps) - 1 for ps in got.values())
    print(f"kafka broker outage: {dups} duplicate(s) of 8 webhooks")


def test_outbox_survives_restart_with_brokers_down(make_stack, tmp_path, kafka):
    """The brokers are down while a run's webhooks are queued, the
    scheduler is stopped (promptly, though its delivery thread was waiting
    on Kafka) and started again with the brokers still down; the outbox
    keeps every webhook; once the brokers are back they all arrive."""
    up, svc, st = _stack(make_stack, tmp_path, f"kafka://{kafka.bootstrap}/{TOPIC}")
    files = _drop(up, 4, nested=False)
    kafka.down()
    s = st.add_scheduler()
    s.signal(signal.SIGUSR1)
    _wait(lambda: _tree(up) == {} and len(_tree(svc)) == 4, 20, "the items\n" + s.log())
    outbox = os.path.join(st.config["storgate_scheduler"]["state_dir"], "outbox", "node0")  # the node's own
    _wait(lambda: len([f for f in os.listdir(outbox) if f.endswith(".json")]) == 4, 10, "4 webhooks queued")
    time.sleep(0.5)  # the delivery thread is now waiting on the brokers
    t0 = time.monotonic()
    s.expected_exit = True
    rc, problem = s.stop()
    assert problem is None and rc == 0 and time.monotonic() - t0 < 5, (rc, problem, time.monotonic() - t0)
    assert len([f for f in os.listdir(outbox) if f.endswith(".json")]) == 4
    s2 = st.add_scheduler(name="node0")
    time.sleep(1.0)
    assert _pending(st, s2) == 4
    kafka.up()
    _wait(lambda: _pending(st, s2) == 0, 30, "an empty outbox after the restart\n" + s2.log())
    got = _by_key(kafka.messages(TOPIC))
    assert sorted(p["item"]["filename"] for ps in got.values() for p in ps[:1]) == sorted(files)
    assert all(1 <= len(ps) <= 2 for ps in got.values()), {k: len(v) for k, v in got.items()}


def test_malformed_kafka_targets_refused(make_stack, tmp_path):
    """A kafka:// target without a port, or without a topic, is refused
    when the item finishes: a log line that says why, and
    refract_storgate_webhooks_total{outcome="unsupported"}."""
    for i, (target, why) in enumerate([("kafka://127.0.0.1/events", "HOST:PORT expected"),
                                       ("kafka://127.0.0.1:9092/", "topic")]):
        d = tmp_path / f"t{i}"
        d.mkdir()
        up, svc, st = _stack(make_stack, d, target)
        _drop(up, 1, nested=False)
        s = st.add_scheduler()
        s.signal(signal.SIGUSR1)
        _wait(lambda: (st.scheduler_metric(s, "refract_storgate_webhooks_total", outcome="unsupported") or 0) == 1,
              15, "the refusal\n" + s.log())
        assert why in s.log() and _pending(st, s) == 0
