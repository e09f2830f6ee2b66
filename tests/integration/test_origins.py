"""Several origins per vhost: round_robin and consistent (rendezvous) hash
balancing, and passive health (an origin that keeps failing is skipped for
a while, then tried again)."""
import os
import time

import harness


def _site(d):
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, "f.txt")
    with open(p, "w") as f:
        f.write("f\n")
    day = time.time() - 86400  # old: the Last-Modified heuristic allows a TTL
    os.utime(p, (day, day))
    return d


def _who(origins, path):
    """Which origin (index) received requests for path, by count."""
    return [sum(1 for q in o.requests if q["path"] == path) for o in origins]


def test_round_robin_spreads(make_stack, tmp_path):
    os_ = [harness.Origin(_site(str(tmp_path / f"o{i}"))) for i in range(2)]
    try:
        st = make_stack([{"name": "b.test", "default": True, "origin": [o.url for o in os_], "balance": "round_robin",
                          "cache": {"enable": False}}], workers=0, gateway={"threads": 1})
        for _ in range(20):
            assert st.get("/f.txt", host="b.test").status_code == 200
        c = _who(os_, "/f.txt")
        assert c == [10, 10], c
    finally:
        for o in os_:
            o.close()


def test_hash_is_sticky_and_moves_about_1_in_n(make_stack, tmp_path):
    os_ = [harness.Origin(_site(str(tmp_path / f"o{i}")), nodelay=True) for i in range(3)]
    paths = [f"/_echo?k={i}" for i in range(300)]
    try:
        def owners(n):
            st = make_stack([{"name": "h.test", "default": True, "origin": [o.url for o in os_[:n]],
                              "balance": "hash", "cache": {"enable": False}}], workers=0)
            before = [len(o.requests) for o in os_]
            for p in paths:
                st.get(p, host="h.test")
                st.get(p, host="h.test")  # the same key goes to the same origin
            own = {}
            for i, o in enumerate(os_):
                for q in o.requests[before[i]:]:
                    own.setdefault(q["path"], set()).add(i)
            assert all(len(v) == 1 for v in own.values()), "a key went to two origins"
            st.close()
            return {p: next(iter(v)) for p, v in own.items()}

        two, three = owners(2), owners(3)
        assert len(two) == len(three) == 300
        spread = [sum(1 for v in two.values() if v == i) for i in range(2)]
        assert min(spread) > 100, spread
        moved = [p for p in paths if two[p] != three[p]]
        assert all(three[p] == 2 for p in moved), "keys moved between the old origins"
        assert 0.2 < len(moved) / 300 < 0.47, len(moved)
    finally:
        for o in os_:
            o.close()


def test_passive_health_skips_a_dead_origin(make_stack, tmp_path):
    good = harness.Origin(_site(str(tmp_path / "good")))
    dead = f"http://127.0.0.1:{harness.free_port()}"
    try:
        st = make_stack([{"name": "p.test", "default": True, "origin": [dead, good.url], "balance": "round_robin",
                          "health": {"fails": 2, "down": "30s"}, "cache": {"enable": False}}],
                        workers=0, gateway={"threads": 1})
        codes = [st.get("/f.txt", host="p.test").status_code for _ in range(12)]
        assert codes.count(502) <= 2, codes  # at most fails=2 before it is skipped
        assert codes[-6:] == [200] * 6, codes
        assert "marked down" in st.gw.log()
    finally:
        good.close()


def test_several_origins_must_be_http(tmp_path):
    cfg = {"gateway": {"listen": "127.0.0.1:1"}, "bus": {"endpoint": "tcp://127.0.0.1:9"},
           "vhosts": [{"name": "a", "origin": ["http://127.0.0.1:9", "file:///tmp"]}]}
    p = tmp_path / "bad.yaml"
    p.write_text(harness.to_yaml(cfg) + "\n")
    out = harness.subprocess.run([harness.GATEWAY_BIN, "-t", "-c", str(p)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and "several origins must all be http(s)" in out.stderr, out.stderr


def test_siblings_share_keys_by_owner(make_stack, tmp_path):
    o = harness.Origin(_site(str(tmp_path / "origin")))
    try:
        sts = [make_stack([{"name": "s.test", "default": True, "origin": o.url}], workers=0, start=False,
                          gateway={"name": f"sib{i}"}) for i in range(3)]
        peers = [f"http://127.0.0.1:{st.port}" for st in sts]
        for i, st in enumerate(sts):
            st.config["vhosts"][0]["siblings"] = {"self": peers[i], "peers": peers}
            st.write_config()
            st.start_gateway()
        paths = [f"/_echo?s={i}" for i in range(30)]
        for p in paths:
            for st in sts:  # every gateway asked for every key
                r = st.get(p, host="s.test")
                assert r.status_code == 200, (p, r.status_code, r.text)
        # each key reached the origin once: only its owner fetched it
        for p in paths:
            n = sum(1 for q in o.requests if q["path"] == p)
            assert n == 1, (p, n)
        # and the owners are spread over the three
        owners = {}
        for p in paths:
            q = next(q for q in o.requests if q["path"] == p)
            via = q["headers"].get("via") or q["headers"].get("Via")
            owners[p] = via.split()[-1]
        assert len(set(owners.values())) == 3, owners
        # a request a sibling passed on is not passed on again (no loop)
        r = sts[0].get("/_echo?s=999", host="s.test", headers={"X-Refract-Sibling": "1"})
        assert r.status_code == 200
        assert (next(q for q in o.requests if q["path"] == "/_echo?s=999")["headers"].get("via")).endswith("sib0")
        # owner down: served locally
        sts[1].gw.stop()
        for p in paths:
            assert sts[0].get(p + "&after=1", host="s.test").status_code == 200
    finally:
        o.close()


def test_byclient_origin_from_the_url(make_stack, tmp_path):
    o = harness.Origin(_site(str(tmp_path / "ext")))
    hostport = o.url.split("//", 1)[1]
    try:
        st = make_stack([
            {"name": "mixed.example", "origin": "http://127.0.0.1:9",
             "byclient": {"keyword": "byclient", "protocol": "http", "allow": ["127.0.0.1:*"]}},
            {"name": "www.example.com", "default": True, "origin": "http://127.0.0.1:9"},
        ], workers=0)
        st.config["url_rewrite"] = [{"pattern": r"^www\.example\.com/item-detail/mixed/(.*)",
                                     "replace": "mixed.example/byclient/#1"}]
        st.write_config()
        st.gw.stop()
        st.start_gateway()
        r = st.get(f"/byclient/{hostport}/f.txt", host="mixed.example")
        assert r.status_code == 200 and r.text == "f\n", (r.status_code, r.text)
        assert any(q["path"] == "/f.txt" for q in o.requests)
        assert "hit" in st.get(f"/byclient/{hostport}/f.txt", host="mixed.example").headers["Cache-Status"]
        # the seed's mixed-content set-up: a rewrite into the byclient vhost
        r = st.get(f"/item-detail/mixed/{hostport}/f.txt", host="www.example.com")
        assert r.status_code == 200 and r.text == "f\n"
        # the client's credentials for this site do not go to a third-party host
        r = st.get(f"/byclient/{hostport}/_echo", host="mixed.example",
                   headers={"Cookie": "session=s3cret", "Authorization": "Bearer t0k", "X-Other": "kept"})
        seen = {k.lower() for k in r.json()["headers"]}
        assert "cookie" not in seen and "authorization" not in seen and "x-other" in seen, seen
        # only allowed hosts; a bad form is a 400
        r = st.get("/byclient/evil.example.net/x", host="mixed.example")
        assert r.status_code == 403 and "allow list" in r.text
        assert st.get("/byclient/user@127.0.0.1:1/x", host="mixed.example").status_code == 400
    finally:
        o.close()


def test_byclient_needs_an_allow_list(tmp_path):
    cfg = {"gateway": {"listen": "127.0.0.1:1"}, "bus": {"endpoint": "tcp://127.0.0.1:9"},
           "vhosts": [{"name": "a", "origin": "http://127.0.0.1:9", "byclient": {"keyword": "bc"}}]}
    p = tmp_path / "bad.yaml"
    p.write_text(harness.to_yaml(cfg) + "\n")
    out = harness.subprocess.run([harness.GATEWAY_BIN, "-t", "-c", str(p)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 1 and "allow list" in out.stderr, out.stderr


def test_per_vhost_origin_timeouts(make_stack, tmp_path):
    o = harness.Origin(_site(str(tmp_path / "slow")))
    try:
        st = make_stack([
            {"name": "quick.test", "default": True, "origin": o.url, "timeouts": {"read": "500ms"},
             "cache": {"enable": False}},
            {"name": "patient.test", "origin": o.url, "cache": {"enable": False}},  # gateway default (5s in tests)
        ], workers=0)
        t0 = time.monotonic()
        r = st.get("/_delay?secs=2", host="quick.test")
        assert r.status_code == 504 and time.monotonic() - t0 < 1.8, (r.status_code, time.monotonic() - t0)
        r = st.get("/_delay?secs=2", host="patient.test")
        assert r.status_code == 200
    finally:
        o.close()
