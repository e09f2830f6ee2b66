"""2-tier by configuration alone: a child gateway whose origin is a parent
gateway, Via on requests and responses (RFC 9110 7.6.3), and a gateway
that loops back to itself answered 508 instead of forwarding forever."""
import os
import time

import harness


def _origin_site(d):
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, "t.txt")
    with open(p, "w") as f:
        f.write("tiered\n")
    day = time.time() - 86400
    os.utime(p, (day, day))
    return d


def test_child_in_front_of_parent(make_stack, tmp_path):
    o = harness.Origin(_origin_site(str(tmp_path / "site")))
    try:
        parent = make_stack([{"name": "t.test", "default": True, "origin": o.url}], workers=0,
                            gateway={"name": "parent"})
        child = make_stack([{"name": "t.test", "default": True, "origin": f"http://127.0.0.1:{parent.port}"}],
                           workers=0, gateway={"name": "child"})
        r = child.get("/t.txt", host="t.test")
        assert r.status_code == 200 and r.text == "tiered\n"
        assert "fwd=miss" in r.headers["Cache-Status"]
        assert r.headers["Via"] == "1.1 parent, 1.1 child", r.headers.get("Via")
        seen = [q for q in o.requests if q["path"] == "/t.txt"]
        assert len(seen) == 1 and seen[0]["headers"].get("via", seen[0]["headers"].get("Via")) == "1.1 child, 1.1 parent"
        # the child keeps it: the parent is not asked again
        parent_hits_before = harness.metric_value(parent.metrics(), "refract_http_requests_total", vhost="t.test",
                                                  method="GET", status="200")
        r2 = child.get("/t.txt", host="t.test")
        assert "hit" in r2.headers["Cache-Status"]
        time.sleep(0.2)
        assert harness.metric_value(parent.metrics(), "refract_http_requests_total", vhost="t.test", method="GET",
                                    status="200") == parent_hits_before
    finally:
        o.close()


def test_gateway_pointing_at_itself_is_508(make_stack):
    st = make_stack([{"name": "loop.test", "default": True, "origin": "http://127.0.0.1:9"}], workers=0,
                    gateway={"name": "looper"})
    st.config["vhosts"][0]["origin"] = f"http://127.0.0.1:{st.port}"  # its own port
    st.write_config()
    st.gw.stop()
    st.start_gateway()
    r = st.get("/x", host="loop.test")
    assert r.status_code == 508, (r.status_code, r.text)
    assert "request loop" in r.text


def test_client_via_naming_us_is_508(make_stack, tmp_path):
    st = make_stack([{"name": "v.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    gateway={"name": "edge-1"})
    r = st.get("/x", host="v.test", headers={"Via": "1.1 cdn, 1.1 edge-1"})
    assert r.status_code == 508
    # a name that only contains ours is someone else
    r = st.get("/x", host="v.test", headers={"Via": "1.1 edge-10, 1.1 my-edge-1"})
    assert r.status_code == 404


def test_bad_gateway_name_refused(make_stack, tmp_path):
    st = make_stack([{"name": "n.test", "default": True, "origin": "file://" + str(tmp_path)}], workers=0,
                    start=False, gateway={"name": "bad name, with comma"})
    p = harness.subprocess.run([harness.GATEWAY_BIN, "-c", st.cfg_path], capture_output=True, text=True, timeout=20)
    assert p.returncode == 1 and "gateway.name" in p.stderr, p.stderr
