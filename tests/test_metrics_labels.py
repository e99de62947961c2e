"""Label cardinality: whatever methods, paths, tokens and ESL names arrive, every label of
every metric takes its values from a bounded set, so /metrics (and the process) cannot be
grown by a client. Random requests over real HTTP against a running daemon."""

import os
import string
from collections import defaultdict
from typing import Any

import gevent
import orjson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from channelsd.metrics import HTTP_METHODS, OTHER, Metrics

from conftest import Harness, token, wait_until

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "120"))
# tchar (RFC 9110): what an HTTP method may be made of.
TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
PATH_CHARS = string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@"
MAX_METRICS_BYTES = 128 * 1024  # the whole page; it was 15.6 KB before any request
MAX_VALUES_PER_LABEL = 64

methods = st.one_of(st.sampled_from(sorted(HTTP_METHODS)), st.text(TCHAR, min_size=1, max_size=80))
segments = st.text(PATH_CHARS, min_size=1, max_size=24)
paths = st.one_of(
    st.lists(segments, max_size=6).map(lambda parts: "/" + "/".join(parts)),
    segments.map(lambda a: f"/v2/accounts/{a}/channels"),
    st.tuples(segments, segments).map(lambda t: f"/v2/accounts/{t[0]}/users/{t[1]}/channels"),
    st.tuples(segments, segments).map(lambda t: f"/v2/accounts/{t[0]}/channels/{t[1]}"),
    st.sampled_from(["/healthz", "/readyz", "/metrics", "/v2/channels", "/console/x.js"]),
)
tokens = st.sampled_from([None, token("super"), token("admin1"), "not-a-token"])
requests_ = st.lists(st.tuples(methods, paths, tokens), min_size=20, max_size=30)
SENT: list[int] = []


@pytest.fixture(scope="module")
def target() -> Any:
    from channelsd.config import parse
    from channelsd.daemon import Daemon
    from channelsd.standin.server import StandinSwitch

    from conftest import config_dict

    switch = StandinSwitch(hostname="labels")
    switch.start()
    switch.bridged_call(variables_a={"account_id": "acc1"}, variables_b={"account_id": "acc1"})
    daemon = Daemon(parse(config_dict([switch]), "labels.toml"))
    daemon.start()
    h = Harness(daemon)
    h.wait_ready()
    yield h
    daemon.stop()
    switch.stop()


def label_values(text: str) -> dict[tuple[str, str], set[str]]:
    values: dict[tuple[str, str], set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label, value in sample.labels.items():
                values[(family.name, label)].add(value)
    return values


def check_bounded(h: Harness) -> int:
    resp = h.api.get("/metrics", tok=None)
    assert resp.status_code == 200
    size = len(resp.content)
    assert size <= MAX_METRICS_BYTES, f"/metrics grew to {size} bytes"
    routes = h.daemon.metrics.routes
    for (family, label), values in label_values(resp.text).items():
        assert len(values) <= MAX_VALUES_PER_LABEL, (family, label, sorted(values)[:10])
        if family.startswith("channelsd_http_request"):
            if label == "method":
                assert values <= HTTP_METHODS | {OTHER}, values
            elif label == "route":
                assert values <= routes | {"unmatched"}, values
            elif label == "status":
                assert all(len(v) == 3 and v.isdigit() for v in values), values
    # The per-label-set children the daemon caches are as bounded as the labels.
    assert len(h.daemon.metrics._http_children) <= len(routes) * 10 * 20
    return size


@given(batch=requests_)
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_random_methods_and_paths_leave_metrics_bounded(
    target: Harness, batch: list[tuple[str, str, str | None]]
) -> None:
    session = requests.Session()
    for method, path, tok in batch:
        headers = {"X-Auth-Token": tok} if tok else {}
        try:
            session.request(method, target.api.base + path, headers=headers, timeout=10)
        except requests.RequestException:
            session = requests.Session()  # a request the server refused to parse: go on
        SENT.append(1)
    check_bounded(target)


def test_the_random_requests_really_ran(target: Harness, figure: Any) -> None:
    size = check_bounded(target)
    figure(
        "label cardinality: random methods, paths and tokens",
        cases=len(SENT),
        held=len(SENT),
        metrics_bytes=size,
    )
    assert len(SENT) >= 2400 or EXAMPLES < 120


@given(
    names=st.lists(st.text(min_size=0, max_size=40), min_size=1, max_size=300),
    reasons=st.lists(st.text(max_size=40), min_size=1, max_size=50),
)
@settings(max_examples=30, derandomize=True, deadline=None)
def test_esl_side_labels_are_capped_whatever_names_arrive(
    names: list[str], reasons: list[str]
) -> None:
    metrics = Metrics()
    for i, name in enumerate(names):
        metrics.command("fs1", name, 0.001)
        metrics.command_errors.labels("fs1", name, reasons[i % len(reasons)]).inc()
        metrics.parse_errors.labels(name).inc()  # as if a node were named anything
    for (_family, _label), values in label_values(metrics.render().decode()).items():
        assert len(values) <= MAX_VALUES_PER_LABEL + 1
        assert all(v == OTHER or len(v) <= 64 for v in values)
    assert len(metrics._command_children) <= MAX_VALUES_PER_LABEL


def esl_event_counts(h: Harness) -> dict[str, float]:
    resp = h.api.get("/metrics", tok=None)
    assert resp.status_code == 200
    return {
        sample.labels["event"]: sample.value
        for family in text_string_to_metric_families(resp.text)
        if family.name == "channelsd_esl_events"
        for sample in family.samples
        if sample.name == "channelsd_esl_events_total" and sample.labels["node"] == "fs1"
    }


def test_events_counted_by_name_whatever_the_switch_names_them(
    switch: Any, make_daemon: Any
) -> None:
    """The events counter's `event` label: a subscribed name or "other", whatever name the
    switch writes (random CHANNEL_ names, non-string names, escaped spellings), and each
    event counted once, whether the reader's cutter picked it (counted per cut, applied
    straight to the table) or it was parsed whole (counted by the node's handler)."""
    import random
    import uuid

    from channelsd.node import SUBSCRIBED_EVENTS
    from channelsd.standin.replay import Frame

    h = make_daemon([switch])
    rng = random.Random(7)
    names: list[tuple[Any, str]] = []  # (what the body says, the label it counts under)
    for _ in range(400):
        pick = rng.randrange(6)
        if pick == 0:
            names.append(("CHANNEL_CREATE", "CHANNEL_CREATE"))
        elif pick == 1:
            suffix = "".join(rng.choice("ABCXYZ_0189") for _ in range(rng.randrange(1, 12)))
            names.append(("CHANNEL_" + suffix, "other"))
        elif pick == 2:
            names.append((rng.choice([5, None, ["CHANNEL_CREATE"], {"a": 1}]), "other"))
        elif pick == 3:
            names.append(("CUSTOM", "other"))
        elif pick == 4:
            names.append(("CHANNEL\\u005fSTATE", "CHANNEL_STATE"))  # escaped: parsed whole
        else:
            names.append(("CHANNEL_CALLSTATE", "CHANNEL_CALLSTATE"))
    frames = []
    for written, _label in names:
        name_json = f'"{written}"'.encode() if isinstance(written, str) else orjson.dumps(written)
        body = b'{"Event-Name": %s, "Unique-ID": "%s", "Channel-State": "CS_EXECUTE"}' % (
            name_json,
            str(uuid.uuid4()).encode(),
        )
        head = b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(body)
        frames.append(Frame("text/event-json", "CHANNEL_CREATE", None, head + body))
    before = esl_event_counts(h)
    # Written back to back (the cutter takes runs of them) and, the last hundred, one by one
    # with a pause between (each read holds one frame: the reader's own framing).
    switch.send_frames(frames[:300])
    for f in frames[300:]:
        switch.send_frames([f])
        gevent.sleep(0.002)
    expected: dict[str, int] = {}
    for _written, label in names:
        expected[label] = expected.get(label, 0) + 1

    def delta() -> dict[str, float]:
        after = esl_event_counts(h)
        return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}

    wait_until(lambda: sum(delta().values()) >= len(names), what="every event counted")
    assert delta() == expected
    assert set(esl_event_counts(h)) <= set(SUBSCRIBED_EVENTS) | {"other"}
