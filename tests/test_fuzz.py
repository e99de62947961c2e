"""Schemathesis against the running daemon, driven by the shipped OpenAPI document.

Every response must match the document (status, content type, headers, body) and no 5xx may
appear except the documented 502/503/504 from FreeSWITCH. The run is seeded and bounded so
it fits in CI; FUZZ_EXAMPLES raises it for a long run by hand.
"""

import json
import os
from importlib import resources
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from conftest import Harness, token

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "120"))
SPEC = json.loads(resources.files("channelsd").joinpath("openapi.json").read_text())
schema = schemathesis.openapi.from_dict(SPEC).exclude(
    # endless by design: covered by tests/test_stream.py; and the websocket, a protocol switch
    # rather than an answer, by tests/test_websocket.py
    path_regex="channel_events|^/websocket$"
)
# Every request presents a superduper token in X-Auth-Token, which wins over Authorization and
# auth_token (the document's order): credentials generated for those would be noise, and a
# malformed one "accepted" is that order at work, not a defect.
schema.config.generation.update(with_security_parameters=False)
CALLS: dict[str, int] = {}


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest) -> Any:
    from channelsd.config import parse
    from channelsd.daemon import Daemon
    from channelsd.standin.server import StandinSwitch

    from conftest import config_dict

    switch = StandinSwitch(hostname="fuzz")
    switch.start()
    switch.bridged_call(variables_a={"account_id": "acc1"}, variables_b={"account_id": "acc1"})
    daemon = Daemon(parse(config_dict([switch]), "fuzz.toml"))
    daemon.start()
    h = Harness(daemon)
    h.wait_ready()
    yield h
    daemon.stop()
    switch.stop()


def test_the_document_is_served(target: Harness) -> None:
    resp = target.api.get("/v2/openapi.json", tok=None)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    assert resp.json() == SPEC


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_conforms(case: Any, target: Harness) -> None:
    headers = {"X-Auth-Token": token("super")} if case.operation.path.startswith("/v2") else {}
    response = case.call_and_validate(base_url=target.api.base, headers=headers)
    CALLS[case.operation.label] = CALLS.get(case.operation.label, 0) + 1
    assert response.status_code < 500 or response.status_code in (502, 503, 504)


def test_fuzzing_really_ran(target: Harness, figure: Any) -> None:
    # Runs after the parametrized test in file order: the generated requests did go out.
    total = sum(CALLS.values())
    figure("schemathesis requests (no undocumented 5xx, all conforming)", cases=total, held=total)
    assert total >= 1000 or EXAMPLES < 120, CALLS
    assert len(CALLS) >= 9, CALLS
