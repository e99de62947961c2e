"""The subscription registry's limits, against a model (issue #11, item 5).

Streams are opened and ended in any order by tokens of several accounts; the registry must
refuse exactly when a limit (in all, per token, per account) is reached, name that limit,
and give every place back when a subscription ends, however it ends. The HTTP side of the
same limits is tests/test_floods.py::test_one_token_or_one_account_cannot_take_every_stream.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from channelsd.config import parse
from channelsd.subscriptions import Refused, Subscription, Subscriptions
from channelsd.tokens import Token

ROOT = Path(__file__).resolve().parent.parent
LIMIT, PER_TOKEN, PER_ACCOUNT = 9, 3, 5
TOKENS = [Token(f"{i:064x}", f"acc{i % 3}", "admin") for i in range(6)]


class Registry(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.subs = Subscriptions(LIMIT, PER_TOKEN, PER_ACCOUNT)
        self.open_subs: list[Subscription] = []
        self.woken = 0

    def expected_refusal(self, token: Token) -> str | None:
        live = self.open_subs
        if len(live) >= LIMIT:
            return "http.max_streams"
        if sum(s.token is token for s in live) >= PER_TOKEN:
            return "http.max_streams_per_token"
        if sum(s.token.account_id == token.account_id for s in live) >= PER_ACCOUNT:
            return "http.max_streams_per_account"
        return None

    @rule(token=st.sampled_from(TOKENS))
    def open(self, token: Token) -> None:
        want = self.expected_refusal(token)
        try:
            sub = self.subs.open(token, "channel_events", self.wake)
        except Refused as refused:
            assert refused.key == want
            return
        assert want is None
        self.open_subs.append(sub)

    def wake(self) -> None:
        self.woken += 1

    @precondition(lambda self: self.open_subs)
    @rule(i=st.integers(0, 100), ended_by_server=st.booleans(), twice=st.booleans())
    def close(self, i: int, ended_by_server: bool, twice: bool) -> None:
        sub = self.open_subs.pop(i % len(self.open_subs))
        woken = self.woken
        for _ in range(2 if twice else 1):  # ending or releasing again changes nothing
            if ended_by_server:
                sub.end()
            else:
                sub.release()
        assert self.woken == woken + (1 if ended_by_server else 0)

    @invariant()
    def counts_agree(self) -> None:
        assert len(self.subs) == len(self.open_subs)


TestRegistry = Registry.TestCase
TestRegistry.settings = settings(max_examples=60, stateful_step_count=40, derandomize=True)


def test_the_limits_are_configured_and_documented() -> None:
    limits = parse({}).http_limits
    assert (limits.max_streams_per_token, limits.max_streams_per_account) == (32, 64)
    subs = Subscriptions.from_limits(
        parse({"http": {"max_streams_per_token": 2, "max_streams_per_account": 3}}).http_limits
    )
    assert (subs.limit, subs.per_token, subs.per_account) == (256, 2, 3)
    documented = (ROOT / "conf" / "channelsd.toml").read_text()
    readme = (ROOT / "README.md").read_text()
    for key in ("max_streams_per_token", "max_streams_per_account"):
        assert f"\n{key} = " in documented, key
        assert f"`{key}`" in readme, key


@pytest.mark.parametrize("bad", [0, -1, "4"])
def test_a_limit_must_be_a_positive_integer(bad: object) -> None:
    from channelsd.config import ConfigError

    with pytest.raises(ConfigError, match="http.max_streams_per_token"):
        parse({"http": {"max_streams_per_token": bad}})
