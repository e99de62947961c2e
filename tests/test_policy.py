"""Tenant policy for media, contexts and dialplans ([actions] allowed_*, media_template)."""

from __future__ import annotations

from typing import Any

import pytest
from test_actions import Call, ok, refused

from channelsd.config import ConfigError, parse

MEDIA_ID = "0123456789abcdef0123456789abcdef"


def make_call(switch: Any, make_daemon: Any, **actions: Any) -> Call:
    return Call(make_daemon([switch], actions=actions), switch)


@pytest.fixture
def call(switch: Any, make_daemon: Any) -> Call:
    """The shipped defaults: FreeSWITCH's streams and its sounds directory, the configured
    context and dialplan only."""
    return make_call(switch, make_daemon)


def play(call: Call, media: str) -> Any:
    body = {"action": "metaflow", "data": {"module": "play", "data": {"id": media, "leg": "self"}}}
    return call.put(call.p, body)


def attended(call: Call, moh: str) -> Any:
    body = {"action": "transfer", "target": "2000", "transfer_type": "attended", "moh": moh}
    return call.post(call.a, {"data": body})


@pytest.mark.parametrize(
    "media",
    [
        "http_cache://http://127.0.0.1:9/x.wav",
        "http://127.0.0.1:9/x.wav",
        "https://media.example.com/x.wav",
        "shout://example.com/x.mp3",
        "/etc/passwd",
        "/var/lib/freeswitch/recordings/acc2/call.wav",
        "/usr/share/freeswitch/soundsX/x.wav",  # a sibling of the root, not under it
        "/usr/share/freeswitch/sounds//etc/passwd",
        "/usr/share/freeswitch/sounds/.hidden.wav",
        "/usr/share/freeswitch/sounds/",
        MEDIA_ID,  # no media_template configured
    ],
)
def test_media_outside_the_policy_is_refused(call: Call, media: str, figure: Any) -> None:
    detail = refused(play(call, media), "data.id", "policy")
    assert detail["value"] == media
    detail = refused(attended(call, media), "moh", "policy")
    assert call.sent() == []
    figure("policy: media, contexts and dialplans refused", cases=2, held=2)


@pytest.mark.parametrize(
    "media",
    [
        "/usr/share/freeswitch/sounds/../../../../etc/passwd",
        "/usr/share/freeswitch/sounds/en/./x.wav",
        "/usr/share/freeswitch/sounds/en/..",
    ],
)
def test_dot_segments_are_refused_as_malformed(call: Call, media: str, figure: Any) -> None:
    refused(play(call, media), "data.id", "format")
    refused(attended(call, media), "moh", "format")
    assert call.sent() == []
    figure("policy: media, contexts and dialplans refused", cases=2, held=2)


@pytest.mark.parametrize(
    "media",
    [
        "tone_stream://%(2000,4000,440,480);loops=-1",
        "silence_stream://500",
        "local_stream://moh",
        "/usr/share/freeswitch/sounds/en/us/callie/ivr/8000/ivr-hello.wav",
    ],
)
def test_the_default_policy_plays_freeswitch_streams_and_sounds(call: Call, media: str) -> None:
    ok(play(call, media), 201, "metaflow sent")
    assert call.sent() == [f"api uuid_broadcast {call.p} {media} aleg"]


def test_per_account_media_directories_and_listed_urls(switch: Any, make_daemon: Any) -> None:
    call = make_call(
        switch,
        make_daemon,
        allowed_media=["tone_stream://", "/var/lib/media/{account_id}/", "https://media.example/"],
    )
    for media in ("/var/lib/media/acc1/greeting.wav", "https://media.example/a/b.wav"):
        ok(play(call, media), 201, "metaflow sent")
        assert call.sent() == [f"api uuid_broadcast {call.p} {media} aleg"]
    for media in (
        "/var/lib/media/acc2/greeting.wav",
        "/var/lib/media/acc10/greeting.wav",
        "https://media.example.evil/x.wav",
        "https://media.example/a/%2e%2e/b.wav",
        "https://media.example/a/%2F/b.wav",
    ):
        detail = refused(play(call, media), "data.id", "policy")
        assert detail["target"] == [
            "tone_stream://",
            "/var/lib/media/acc1/",
            "https://media.example/",
        ]
    assert call.sent() == []


def test_media_ids_resolve_through_the_media_template(switch: Any, make_daemon: Any) -> None:
    call = make_call(
        switch, make_daemon, media_template="/var/lib/media/{account_id}/{media_id}.wav"
    )
    ok(attended(call, MEDIA_ID), 200, "transfer initiated")
    assert (
        call.sent()[0] == f"api uuid_setvar {call.b} hold_music /var/lib/media/acc1/{MEDIA_ID}.wav"
    )
    ok(play(call, MEDIA_ID), 201, "metaflow sent")
    assert call.sent() == [f"api uuid_broadcast {call.p} /var/lib/media/acc1/{MEDIA_ID}.wav aleg"]


@pytest.mark.parametrize("dialplan", ["LUA", "enum", "asterisk", "inline", "INLINE", "XML2"])
def test_only_configured_dialplans(call: Call, dialplan: str, figure: Any) -> None:
    resp = call.post(
        call.a, {"data": {"action": "transfer", "target": "9001", "dialplan": dialplan}}
    )
    rule = "format" if dialplan.lower() == "inline" else "enum"
    detail = refused(resp, "dialplan", rule)
    if rule == "enum":
        assert detail["target"] == ["XML"]
    assert call.sent() == []
    figure("policy: media, contexts and dialplans refused", cases=1, held=1)


def test_dialplan_names_compare_without_case_and_send_the_configured_spelling(
    call: Call,
) -> None:
    resp = call.post(call.a, {"data": {"action": "transfer", "target": "9001", "dialplan": "xml"}})
    ok(resp, 200, "transfer initiated")
    assert call.sent() == [f"api uuid_transfer {call.a} 9001 XML default"]


@pytest.mark.parametrize(("action", "field"), [("transfer", "target"), ("callflow", "id")])
def test_only_configured_contexts(call: Call, action: str, field: str, figure: Any) -> None:
    for context in ("public", "other_tenant", "features"):
        resp = call.post(call.a, {"data": {"action": action, field: "9001", "context": context}})
        detail = refused(resp, "context", "enum")
        assert detail["target"] == ["default"] and detail["value"] == context
    assert call.sent() == []
    figure("policy: media, contexts and dialplans refused", cases=3, held=3)


def test_per_account_contexts(switch: Any, make_daemon: Any) -> None:
    call = make_call(
        switch,
        make_daemon,
        context="ctx_{account_id}",
        callflow_context="cf_{account_id}",
        allowed_contexts=["{realm}", "shared"],
        allowed_dialplans=["LUA"],
    )
    ok(
        call.post(call.a, {"data": {"action": "transfer", "target": "9001"}}),
        200,
        "transfer initiated",
    )
    assert call.sent() == [f"api uuid_transfer {call.a} 9001 XML ctx_acc1"]
    ok(call.post(call.p, {"data": {"action": "callflow", "id": "3000"}}), 200, "callflow initiated")
    assert call.sent() == [f"api uuid_transfer {call.p} 3000 XML cf_acc1"]
    body = {"action": "transfer", "target": "9001", "context": "acc1.example", "dialplan": "lua"}
    ok(call.post(call.a, {"data": body}), 200, "transfer initiated")
    assert call.sent() == [f"api uuid_transfer {call.a} 9001 LUA acc1.example"]
    resp = call.post(
        call.a, {"data": {"action": "transfer", "target": "9001", "context": "ctx_acc2"}}
    )
    detail = refused(resp, "context", "enum")
    assert detail["target"] == ["ctx_acc1", "cf_acc1", "acc1.example", "shared"]
    assert call.sent() == []


def test_a_context_template_needs_the_channels_account(switch: Any, make_daemon: Any) -> None:
    from test_gate import RecordingNode

    from channelsd.actions import Actions
    from channelsd.envelope import ApiError
    from channelsd.tokens import Token

    call = make_call(switch, make_daemon, context="ctx_{account_id}")
    ch = call.h.table.get(call.p)
    node = RecordingNode()
    actions = Actions(call.h.table, {"fs1": node}, call.h.daemon.ctx.actions.cfg)
    ch.account_id = None  # a channel without an account (reachable by a superduper token)
    with pytest.raises(ApiError) as info:
        body = {"data": {"action": "transfer", "target": "9001"}}
        actions.post(ch, body, {}, Token("0" * 64, "acc0", "superduper"))
    assert info.value.status == 400
    assert info.value.data == {
        "channel.account_id": {"required": {"message": "Value is missing", "target": "account-id"}}
    }
    assert node.sent == []


@pytest.mark.parametrize(
    ("actions", "expected"),
    [
        ({"allowed_media": ["/"]}, "actions.allowed_media[0]: must be a directory ending in /"),
        ({"allowed_media": ["/var/media"]}, "actions.allowed_media[0]: '/var/media' would not"),
        ({"allowed_media": ["https://x.example"]}, "actions.allowed_media[0]: must be a directory"),
        ({"allowed_media": ["/var/../etc/"]}, "actions.allowed_media[0]: '/var/../etc/' would not"),
        ({"allowed_media": ["/m/{owner_id}/"]}, "actions.allowed_media[0]: unknown placeholder"),
        ({"allowed_dialplans": ["inline"]}, "actions.allowed_dialplans[0]: 'inline' must be"),
        ({"dialplan": "Inline"}, "actions.dialplan: 'Inline' must be a dialplan name"),
        ({"context": "ctx {account_id}"}, "actions.context: 'ctx {account_id}' would not give"),
        ({"context": "ctx_{account_id!r}"}, "actions.context: bad template"),
        ({"callflow_context": "cf_{owner_id}"}, "actions.callflow_context: unknown placeholder"),
        ({"allowed_contexts": ["a|b"]}, "actions.allowed_contexts[0]: 'a|b' would not give"),
        ({"media_template": "/m/{account_id}/{id}.wav"}, "actions.media_template: unknown"),
        (
            {"media_template": "/m/{media_id}.wav|x"},
            "actions.media_template: '/m/{media_id}.wav|x'",
        ),
        ({"attended_dialstring": "user/{target}@{realm:>99}"}, "actions.attended_dialstring: bad"),
        (
            {"intercept_endpoints": {"device": "user/{target_id}@{realm}&system(x)"}},
            "actions.intercept_endpoints.device: 'user/{target_id}@{realm}&system(x)' would not",
        ),
        ({"record_dir": "/var/rec/../../etc"}, "actions.record_dir: must be an absolute path"),
        ({"moh": "/x/${system(id)}"}, "actions.moh: must be a media path"),
    ],
)
def test_policy_and_templates_are_checked_at_start(
    actions: dict[str, Any], expected: str, figure: Any
) -> None:
    with pytest.raises(ConfigError) as info:
        parse({"actions": actions}, "c.toml")
    assert str(info.value).startswith(f"c.toml: {expected}"), str(info.value)
    figure("policy: media, contexts and dialplans refused", cases=1, held=1)


def test_the_default_policy() -> None:
    cfg = parse({}).actions
    assert cfg.allowed_media == (
        "tone_stream://",
        "silence_stream://",
        "local_stream://",
        "/usr/share/freeswitch/sounds/",
    )
    assert cfg.allowed_contexts == () and cfg.allowed_dialplans == () and cfg.media_template == ""
