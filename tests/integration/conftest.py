"""Fixtures for refract's integration suite.

  /usr/bin/python3 -m pytest -q tests/integration

- every test runs under a SIGALRM deadline (60 s unless marked
  @pytest.mark.timeout_s(N)); pytest-timeout is not needed;
- `media`: sample images made once per session with ffmpeg/vips;
- `origin`: a threaded http.server on a free port serving `media` plus
  special paths (harness.OriginHandler);
- `make_stack(vhosts, ...)`: a gateway + N image workers on free ports with
  a config in tmp_path; stopped (SIGTERM, SIGKILL after 10 s) at teardown,
  which also fails the test if one of them crashed;
- logs of running stacks are attached to a failing test's report.
"""
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

DEFAULT_TIMEOUT = 60


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout_s(seconds): per-test deadline enforced with SIGALRM")
    if not os.access(harness.GATEWAY_BIN, os.X_OK):
        # Fail loudly rather than skip: the suite exists to test it. (A missing
        # image worker only fails the tests that start one.)
        raise pytest.UsageError(f"missing {harness.GATEWAY_BIN} (run make first)")


class TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _deadline(request):
    m = request.node.get_closest_marker("timeout_s")
    secs = int(m.args[0]) if m else DEFAULT_TIMEOUT

    def on_alarm(signum, frame):
        raise TestTimeout(f"{request.node.nodeid} exceeded its {secs}s deadline")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(secs)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def media(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("media"))
    files = harness.make_media(d)
    files["dir"] = d
    return files


@pytest.fixture(scope="session")
def origin(media):
    o = harness.Origin(media["dir"])
    yield o
    o.close()


@pytest.fixture
def make_stack(tmp_path):
    """make_stack(vhosts, workers=1, gateway={...}, bus={...}, ...) -> Stack"""
    stacks = []

    def make(vhosts, **kw):
        st = harness.Stack(str(tmp_path / f"stack{len(stacks)}"), vhosts, **kw)
        stacks.append(st)
        return st

    yield make
    problems = []
    for st in stacks:
        try:
            st.close()
        except AssertionError as e:
            problems.append(str(e))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        for i, st in enumerate(list(harness.LIVE_STACKS)):
            rep.sections.append((f"refract logs (stack {i}, {st.dir})", st.logs()))


def pytest_terminal_summary(terminalreporter):
    if harness.MEASUREMENTS:
        terminalreporter.section("refract measurements")
        for line in harness.MEASUREMENTS:
            terminalreporter.write_line(line)
