"""Kazoo-issued tokens (#14): JWTs verified offline with the cluster's public keys.

Against a real daemon over HTTP: a Kazoo token lists and acts on its account's channels, and
every forgery is the one 401 the API answers for any bad token, its reason in the log line
fail2ban reads. The verifier itself is also driven directly (tampering, clocks, caches), and
the descendant check asks a stand-in crossbar over a real socket.
"""

import logging
import re
import time
from pathlib import Path
from typing import Any

import gevent
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kazoo_support import (
    KID,
    Cluster,
    Crossbar,
    SseReader,
    b64,
    claims,
    cluster,
    compose,
    hmac_signed,
    tamper,
    toml_text,
)

from channelsd import kazoo_accounts, kazoo_auth
from channelsd.config import ConfigError, load, parse, service_warnings
from channelsd.daemon import Daemon, authenticator
from channelsd.kazoo_auth import KazooTokens
from channelsd.kazoo_keys import KazooConfig, load_key

from conftest import Harness, config_dict, token, wait_until

# The leeway on exp the README promises (a literal: a test that read the constant would follow
# any change of it).
LEEWAY_SECONDS = 10
ACC1 = {"account_id": "acc1", "owner_id": "user1"}
ACC1_OTHER = {"account_id": "acc1", "owner_id": "user2"}
ACC2 = {"account_id": "acc2"}


def kazoo_section(tmp_path: Path, form: str = "pkcs1", **more: Any) -> dict[str, Any]:
    return {"public_keys": {KID: str(cluster().write(tmp_path, form))}, **more}


@pytest.fixture
def kazoo(switch: Any, make_daemon: Any, tmp_path: Path) -> Harness:
    return make_daemon([switch], kazoo=kazoo_section(tmp_path, superduper_accounts=["accsuper"]))


def uuids(resp: requests.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {c["uuid"] for c in resp.json()["data"]}


def shape(resp: requests.Response) -> dict[str, Any]:
    """A 401's body without what changes from one answer to the next."""
    body = resp.json()
    return {k: v for k, v in body.items() if k not in ("request_id", "timestamp")}


# -- what a Kazoo token may do ----------------------------------------------------------------


def test_a_kazoo_token_lists_and_acts_on_its_accounts_channels(switch: Any, kazoo: Harness):
    a, b = switch.bridged_call(variables_a=ACC1, variables_b=ACC1_OTHER)
    other, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
    wait_until(lambda: len(kazoo.table) == 4, what="both calls")
    tok = cluster().token("acc1")
    # The fast list path and the Flask resource (pretty_print) both take it.
    assert uuids(kazoo.api.get("/v2/accounts/acc1/channels", tok)) == {a, b}
    assert uuids(kazoo.api.get("/v2/accounts/acc1/channels?pretty_print=true", tok)) == {a, b}
    assert kazoo.api.get(f"/v2/accounts/acc1/channels/{a}", tok).json()["data"]["uuid"] == a
    # Not another account's, nor the system list (an admin, not a superduper).
    assert kazoo.api.get("/v2/accounts/acc2/channels", tok).status_code == 403
    assert kazoo.api.get(f"/v2/accounts/acc2/channels/{other}", tok).status_code == 403
    assert kazoo.api.get("/v2/channels", tok).status_code == 403
    # And it acts: a hang-up reaches the switch.
    resp = kazoo.api.request(
        "POST", f"/v2/accounts/acc1/channels/{a}", tok, json={"data": {"action": "hangup"}}
    )
    assert resp.status_code == 200, resp.text
    wait_until(lambda: not kazoo.table.with_uuid(a), what="the call hung up on the switch")
    # channelsd's own tokens keep working beside Kazoo's.
    assert kazoo.api.get("/v2/accounts/acc2/channels", "admin2").status_code == 200


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512"])
def test_every_algorithm_kazoo_signs_with_is_accepted(kazoo: Harness, alg: str) -> None:
    assert kazoo.api.get("/v2/accounts/acc1/channels", cluster().token(alg=alg)).status_code == 200


def test_a_key_in_spki_form_works_like_kazoos_pkcs1(
    switch: Any, make_daemon: Any, tmp_path: Path
) -> None:
    h = make_daemon([switch], kazoo=kazoo_section(tmp_path, "spki"))
    assert h.api.get("/v2/accounts/acc1/channels", cluster().token()).status_code == 200


def test_superduper_accounts_and_the_user_role(
    switch: Any, make_daemon: Any, tmp_path: Path
) -> None:
    h = make_daemon(
        [switch],
        kazoo=kazoo_section(tmp_path, default_role="user", superduper_accounts=["accsuper"]),
    )
    mine, theirs = switch.bridged_call(variables_a=ACC1, variables_b=ACC1_OTHER)
    other, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
    wait_until(lambda: len(h.table) == 4, what="both calls")
    user = cluster().token("acc1", owner_id="user1")
    # A user-role token sees only the channels its owner owns, on the list, one by one and
    # on the fast path's route alike.
    assert uuids(h.api.get("/v2/accounts/acc1/channels", user)) == {mine}
    assert h.api.get(f"/v2/accounts/acc1/channels/{theirs}", user).status_code == 404
    assert h.api.get("/v2/accounts/acc1/users/user2/channels", user).status_code == 403
    # An api_auth token carries no owner: under the user role it would have nothing to show.
    assert h.api.get("/v2/accounts/acc1/channels", cluster().token("acc1")).status_code == 401
    boss = cluster().token("accsuper")
    assert uuids(h.api.get("/v2/channels", boss)) == {mine, theirs, other, _}


# -- refusals: one 401, the reason in the log -------------------------------------------------


def forgeries() -> dict[str, tuple[str, str]]:
    """name -> (token, the reason the log gives)."""
    main, other = cluster(), cluster("other")
    good = main.token()
    pkcs1, spki = main.pem("pkcs1"), main.pem("spki")
    header, payload, signature = good.split(".")
    return {
        "expired": (main.token(exp_in=-LEEWAY_SECONDS - 60), "expired"),
        "signed by another key under the same kid": (other.token(kid=KID), "bad_signature"),
        "unknown kid": (other.token(), "unknown_kid"),
        "no kid": (compose({"alg": "RS256", "typ": "JWT"}, claims(), b"x" * 256), "unknown_kid"),
        "alg none": (compose({"alg": "none", "typ": "JWT", "kid": KID}, claims()), "algorithm"),
        "alg None, capitalised": (
            compose({"alg": "None", "kid": KID}, claims(), b""),
            "algorithm",
        ),
        "HS256 with the PKCS#1 public key as secret": (
            hmac_signed(pkcs1, claims()),
            "algorithm",
        ),
        "HS256 with the SPKI public key as secret": (hmac_signed(spki, claims()), "algorithm"),
        "HS512 with the public key as secret": (
            hmac_signed(pkcs1, claims(), alg="HS512"),
            "algorithm",
        ),
        "PS256 (RSA-PSS) signed by the right key": (main.token(alg="PS256"), "algorithm"),
        "RS384 header on an RS256 signature": (
            compose(
                {"alg": "RS384", "typ": "JWT", "kid": KID},
                claims(),
                base64_decode(signature),
            ),
            "bad_signature",
        ),
        "payload tampered: another account": (tamper(good, account_id="acc2"), "bad_signature"),
        "payload tampered: later exp": (tamper(good, exp=2**40), "bad_signature"),
        # Four characters fewer: bytes that may or may not decode, never a signature.
        "signature cut": (f"{header}.{payload}.{signature[:-4]}", "(malformed|bad_signature)"),
        "another token's signature": (
            f"{header}.{payload}.{main.token('acc2').split('.')[2]}",
            "bad_signature",
        ),
        "no exp": (main.token(exp_in=None), "missing_exp"),
        "another issuer": (main.token(iss="elsewhere"), "wrong_issuer"),
        "no issuer": (main.token(iss=None), "missing_iss"),
        "no account_id": (main.token(account_id=None), "bad_account_id"),
        "an account_id that is not an id": (main.token(account_id="../acc1"), "bad_account_id"),
        "not base64": ("e30.!!!.e30", "malformed"),
        "a header that is not JSON": (f"{b64(b'[1,2')}.{payload}.{signature}", "malformed"),
    }


def base64_decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


FORGERIES = forgeries()


@pytest.mark.parametrize("name", list(FORGERIES))
def test_every_forgery_is_the_one_401_and_the_log_says_why(
    kazoo: Harness, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="channelsd")
    forged, reason = FORGERIES[name]
    unknown = kazoo.api.get("/v2/accounts/acc1/channels", "not-a-token-at-all")
    for path in ("/v2/accounts/acc1/channels", "/v2/accounts/acc1/channels?pretty_print=true"):
        resp = kazoo.api.get(path, forged)
        assert resp.status_code == 401, (name, resp.text)
        assert shape(resp) == shape(unknown)  # nothing in the body tells the cases apart
    lines = [r.getMessage() for r in caplog.records if "auth failure" in r.getMessage()]
    assert lines and all(line.startswith("auth failure client=127.0.0.1 ") for line in lines)
    assert re.search(f"reason={reason}", lines[-1]), lines[-1]
    assert forged not in caplog.text


def test_exp_has_a_small_leeway_and_no_more(kazoo: Harness) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"**{LEEWAY_SECONDS} seconds** of leeway" in readme
    main = cluster()
    assert kazoo.api.get("/v2/accounts/acc1/channels", main.token(exp_in=-2)).status_code == 200
    late = main.token(exp_in=-LEEWAY_SECONDS - 2)
    assert kazoo.api.get("/v2/accounts/acc1/channels", late).status_code == 401


# -- the verifier itself ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def verifier(directory: Path) -> tuple[KazooTokens, Clock]:
    key = load_key(KID, str(cluster().write(directory)))
    clock = Clock()
    return KazooTokens(KazooConfig(keys={KID: key}), clock), clock


GOOD_USER_TOKEN = cluster().token("acc1", owner_id="user1")


@given(
    part=st.sampled_from([0, 1, 2]),
    position=st.integers(min_value=0, max_value=10_000),
    char=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
)
@settings(
    max_examples=300, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck)
)
def test_no_change_to_any_part_of_a_token_is_accepted(
    tmp_path_factory: Any, part: int, position: int, char: str
) -> None:
    tokens, _ = verifier(tmp_path_factory.getbasetemp())
    good = GOOD_USER_TOKEN
    parts = good.split(".")
    text = parts[part]
    i = position % len(text)
    parts[part] = text[:i] + char + text[i + 1 :]
    changed = ".".join(parts)
    found, _ = tokens.verify(changed)
    if found is not None:
        # base64url's last character carries spare bits: the same bytes, the same token.
        assert base64_decode(parts[part]) == base64_decode(good.split(".")[part])
        assert (found.account_id, found.owner_id) == ("acc1", "user1")


def test_verified_tokens_are_kept_by_their_text_never_past_exp(tmp_path: Path, monkeypatch):
    tokens, clock = verifier(tmp_path)
    calls = []
    real = tokens._verify
    monkeypatch.setattr(tokens, "_verify", lambda t, now: calls.append(t) or real(t, now))
    short = cluster().token(exp_in=20)
    for _ in range(5):
        assert tokens.verify(short)[0] is not None
    assert len(calls) == 1  # one RSA verification, then a dictionary lookup
    clock.now += 20 + LEEWAY_SECONDS + 1  # within the cache's minute, past exp
    assert tokens.verify(short) == (None, "expired")
    # Bounded: the oldest entry goes first.
    monkeypatch.setattr(kazoo_auth, "VERIFIED_CACHE_MAX", 3)
    many = [cluster().token(exp_in=3600 + i) for i in range(5)]
    for t in many:
        assert tokens.verify(t)[0] is not None
    assert len(tokens._verified) == 3 and many[0] not in tokens._verified


def test_a_reload_revokes_the_streams_of_a_replaced_key(switch: Any, tmp_path: Path) -> None:
    conf = tmp_path / "channelsd.toml"
    data = config_dict([switch], kazoo=kazoo_section(tmp_path))

    def write(**kazoo: Any) -> None:
        conf.write_text(toml_text({**data, "kazoo": {**data["kazoo"], **kazoo}}))

    write()
    daemon = Daemon(load(conf))
    daemon.start()
    streams = []
    try:
        host, port = daemon.http_address
        base = f"http://{host}:{port}"
        tok = cluster().token("acc1")
        path = "/v2/accounts/acc1/channel_events"
        streams = [SseReader(base, path, tok), SseReader(base, path, token("admin1"))]
        for s in streams:
            wait_until(lambda s=s: "snapshot" in s.kinds(), what="the snapshot")
        # The same kid, another key (Kazoo's key reset): its tokens are revoked.
        replaced = Cluster()
        (tmp_path / "new").mkdir()
        write(public_keys={KID: str(replaced.write(tmp_path / "new", "spki"))})
        assert daemon.reload()
        wait_until(lambda: streams[0].greenlet.dead, what="the Kazoo token's stream ended")
        assert not streams[1].greenlet.dead
        get = requests.get(base + "/v2/accounts/acc1/channels", headers={"X-Auth-Token": tok})
        assert get.status_code == 401
        fresh = replaced.token("acc1")
        ok = requests.get(base + "/v2/accounts/acc1/channels", headers={"X-Auth-Token": fresh})
        assert ok.status_code == 200
    finally:
        for s in streams:
            s.close()
        daemon.stop()


def test_a_stream_authorised_while_a_reload_revokes_its_token_ends_at_once(
    switch: Any, tmp_path: Path
) -> None:
    """The stream's request waited for Kazoo (a descendant account) while a reload replaced
    the key: it must not go on with the revoked token (as the websocket's subscribe)."""
    crossbar = Crossbar()
    conf = tmp_path / "channelsd.toml"
    data = config_dict([switch], kazoo=kazoo_section(tmp_path, crossbar_url=crossbar.url))
    conf.write_text(toml_text(data))
    daemon = Daemon(load(conf))
    daemon.start()
    readers: list[SseReader] = []
    try:
        Harness(daemon).wait_ready()
        host, port = daemon.http_address
        tok = cluster().token("acc1")
        crossbar.allowed.add((tok, "acc2"))
        crossbar.delay = 1.0
        opening = gevent.spawn(
            lambda: readers.append(
                SseReader(f"http://{host}:{port}", "/v2/accounts/acc2/channel_events", tok)
            )
        )
        wait_until(lambda: crossbar.in_flight, what="Kazoo asked")
        (tmp_path / "new").mkdir()
        kazoo = {**data["kazoo"], "public_keys": {KID: str(Cluster().write(tmp_path / "new"))}}
        conf.write_text(toml_text({**data, "kazoo": kazoo}))
        assert daemon.reload()
        opening.join(timeout=10)
        (stream,) = readers
        a, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
        wait_until(lambda: stream.greenlet.dead, what="the stream ended")
        assert "create" not in stream.kinds()
        assert len(daemon.ctx.subscriptions) == 0
    finally:
        for r in readers:
            r.close()
        daemon.stop()
        crossbar.stop()


def test_a_kazoo_tokens_stream_ends_at_its_exp(switch: Any, kazoo: Harness) -> None:
    tok = cluster().token("acc1", exp_in=-LEEWAY_SECONDS + 3)  # accepted for 2-3 more seconds
    s = SseReader(kazoo.api.base, "/v2/accounts/acc1/channel_events", tok)
    try:
        wait_until(lambda: "snapshot" in s.kinds(), what="the snapshot")
        before, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        wait_until(lambda: "create" in s.kinds(), what="a live event while the token holds")
        expires = kazoo.daemon.ctx.auth.find(tok).expires
        assert expires - time.time() < 4  # exp plus the documented leeway
        gevent.sleep(max(0.0, expires - time.time()) + 0.2)
        # The next change wakes the stream, which sees its token expired and ends.
        after, _ = switch.bridged_call(variables_a=ACC1, variables_b=ACC1)
        wait_until(lambda: s.greenlet.dead, what="the stream ended at the token's exp")
        assert all(data.get("uuid") != after for kind, data in s.events if kind == "create")
    finally:
        s.close()


def test_a_stream_on_an_account_kazoo_vouched_for_ends_when_kazoo_says_no(
    switch: Any, make_daemon: Any, tmp_path: Path, crossbar: Crossbar
) -> None:
    h = reseller(switch, make_daemon, tmp_path, crossbar, descendants_cache_seconds=0.5)
    tok = cluster().token("acc1")
    crossbar.allowed.add((tok, "acc2"))
    s = SseReader(h.api.base, "/v2/accounts/acc2/channel_events", tok)
    try:
        wait_until(lambda: "snapshot" in s.kinds(), what="the snapshot")

        def asked() -> int:
            return [p for _, p in crossbar.asked].count("/v2/accounts/acc2")

        # While Kazoo says yes, it is asked again as its answer runs out, and events flow.
        first, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
        wait_until(lambda: "create" in s.kinds(), what="the descendant's event")
        gevent.sleep(1.2)
        second, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
        wait_until(
            lambda: any(d.get("uuid") == second for k, d in s.events if k == "create"),
            what="an event after the first answer ran out",
        )
        assert asked() >= 2 and not s.greenlet.dead
        # The sub-account moved away: the next change ends the stream, and is not sent.
        crossbar.allowed.clear()
        gevent.sleep(1.2)
        after, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
        wait_until(lambda: s.greenlet.dead, what="the withdrawn grant's stream ended")
        assert all(d.get("uuid") != after for k, d in s.events if k == "create")
        # Its own account is never a question.
        assert "/v2/accounts/acc1" not in [p for _, p in crossbar.asked]
    finally:
        s.close()


# -- the configuration ------------------------------------------------------------------------


def test_check_reads_and_validates_the_keys(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def refused(keys: Any, match: str, **more: Any) -> None:
        with pytest.raises(ConfigError, match=match):
            parse({"kazoo": {"public_keys": keys, **more}}, str(tmp_path / "c.toml"))

    ec_pem = tmp_path / "ec.pem"
    ec_pem.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    short = tmp_path / "short.pem"
    short.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=1024)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    )
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN RSA PUBLIC KEY-----\nnot a key\n-----END RSA PUBLIC KEY-----\n")
    refused({KID: str(tmp_path / "missing.pem")}, rf"kazoo.public_keys.{KID}: cannot read")
    refused({KID: str(junk)}, "is not a PEM public key")
    refused({KID: str(ec_pem)}, "is not an RSA public key")
    refused({KID: str(short)}, "1024-bit RSA key is too short")
    refused({}, "public_keys")
    refused({"bad kid/": str(junk)}, "public_keys")
    good = str(cluster().write(tmp_path))
    refused({KID: good}, "default_role", default_role="superduper")
    refused({KID: good}, "crossbar_url", crossbar_url="ftp://kazoo")
    # The schema's pattern takes these; urlsplit does not (a port past 65535 raised in `run`
    # and in a reload, after `check` said ok) or finds no host to ask.
    for url in ("http://127.0.0.1:99999/", "http://127.0.0.1:port/", "http://:8000/"):
        refused({KID: good}, "kazoo.crossbar_url: ", crossbar_url=url)
    with pytest.raises(ConfigError, match="kazoo: 'public_keys' is a required property"):
        parse({"kazoo": {"default_role": "admin"}})
    # A relative path is read from the config file's directory.
    (tmp_path / "keys").mkdir()
    (tmp_path / "sub").mkdir()
    relative = f"../keys/{cluster().write(tmp_path / 'keys').name}"
    cfg = parse({"kazoo": {"public_keys": {KID: relative}}}, str(tmp_path / "sub" / "c.toml"))
    assert cfg.kazoo is not None and cfg.kazoo.keys[KID].key.key_size == 2048


def test_plain_http_to_crossbar_on_another_host_is_warned_of(tmp_path: Path) -> None:
    """The tokens channelsd asks crossbar about would cross the network in clear."""
    good = str(cluster().write(tmp_path))

    def warned(url: str) -> bool:
        node = {"name": "fs1", "host": "127.0.0.1", "password": "s3cret"}
        cfg = parse({"nodes": [node], "kazoo": {"public_keys": {KID: good}, "crossbar_url": url}})
        return any("kazoo.crossbar_url: plain http" in w for w in service_warnings(cfg))

    assert warned("http://kazoo.example.com:8000/v2")
    assert warned("http://10.1.2.3:8000/v2")
    assert not warned("http://127.0.0.1:8000/v2")
    assert not warned("https://kazoo.example.com:8443/v2")


def test_the_shipped_config_documents_the_kazoo_keys() -> None:
    documented = (Path(__file__).resolve().parent.parent / "conf" / "channelsd.toml").read_text()
    for key in ("public_keys", "default_role", "superduper_accounts", "crossbar_url"):
        assert f"\n# {key} = " in documented, key


# -- descendants: asking Kazoo ----------------------------------------------------------------


@pytest.fixture
def crossbar() -> Any:
    cb = Crossbar()
    yield cb
    cb.stop()


def reseller(
    switch: Any,
    make_daemon: Any,
    tmp_path: Path,
    crossbar: Crossbar,
    crossbar_timeout: float = 0.5,
    **more: Any,
) -> Harness:
    section = kazoo_section(
        tmp_path, crossbar_url=crossbar.url, crossbar_timeout=crossbar_timeout, **more
    )
    return make_daemon([switch], kazoo=section)


def test_a_resellers_token_acts_on_the_descendants_kazoo_vouches_for(
    switch: Any, make_daemon: Any, tmp_path: Path, crossbar: Crossbar
) -> None:
    h = reseller(switch, make_daemon, tmp_path, crossbar)
    sub_call, _ = switch.bridged_call(variables_a=ACC2, variables_b=ACC2)
    wait_until(lambda: len(h.table) == 2, what="the call")
    tok = cluster().token("acc1")
    crossbar.allowed.add((tok, "acc2"))
    for path in ("/v2/accounts/acc2/channels", "/v2/accounts/acc2/channels?pretty_print=true"):
        assert sub_call in uuids(h.api.get(path, tok))
    assert h.api.get(f"/v2/accounts/acc2/channels/{sub_call}", tok).status_code == 200
    # Asked once: the answer is kept.
    assert crossbar.asked == [(tok, "/v2/accounts/acc2")]
    # Another account Kazoo says no to: refused, and that answer is kept too.
    assert h.api.get("/v2/accounts/acc3/channels", tok).status_code == 403
    assert h.api.get("/v2/accounts/acc3/channels", tok).status_code == 403
    assert len(crossbar.asked) == 2
    # Its own account needs no question; nor does a channelsd token's.
    assert h.api.get("/v2/accounts/acc1/channels", tok).status_code == 200
    assert h.api.get("/v2/accounts/acc2/channels", "admin1").status_code == 403
    assert len(crossbar.asked) == 2


def test_kazoo_unreachable_slow_or_odd_refuses_and_is_logged(
    switch: Any,
    make_daemon: Any,
    tmp_path: Path,
    crossbar: Crossbar,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.WARNING, logger="channelsd")
    # Each failure opens the breaker (test_kazoo_down_is_not_asked_by_every_request): short
    # here, and every line logged, so that each kind of failure is seen in turn.
    monkeypatch.setattr(kazoo_accounts, "BREAKER_SECONDS", 0.2)
    monkeypatch.setattr(kazoo_accounts, "LOG_INTERVAL", 0.0)
    h = reseller(switch, make_daemon, tmp_path, crossbar)
    tok = cluster().token("acc1")
    crossbar.allowed.add((tok, "acc2"))
    crossbar.allowed.add((tok, "acc3"))
    crossbar.status = 302
    assert h.api.get("/v2/accounts/acc2/channels", tok).status_code == 403
    assert "kazoo account check failed account=acc2 status=302" in caplog.text
    crossbar.status = 500
    assert h.api.get("/v2/accounts/acc5/channels", tok).status_code == 403
    assert "kazoo account check failed account=acc5 status=500" in caplog.text
    gevent.sleep(0.3)
    # Slow beyond crossbar_timeout: refused, and the daemon serves others meanwhile.
    crossbar.status, crossbar.delay = None, 3.0
    answered = []
    slow = gevent.spawn(lambda: answered.append(h.api.get("/v2/accounts/acc3/channels", tok)))
    gevent.sleep(0.1)
    assert h.api.get("/healthz", None).status_code == 200
    assert h.api.get("/v2/accounts/acc1/channels", "admin1").status_code == 200
    slow.join(timeout=10)
    assert answered and answered[0].status_code == 403
    assert "kazoo account check failed account=acc3 error=timeout" in caplog.text
    assert tok not in caplog.text
    gevent.sleep(0.3)
    # Down: a closed port.
    crossbar.stop()
    assert h.api.get("/v2/accounts/acc4/channels", tok).status_code == 403
    assert "kazoo account check failed account=acc4 error=ConnectionRefusedError" in caplog.text


def test_what_kazoo_is_asked_is_bounded(
    switch: Any, make_daemon: Any, tmp_path: Path, crossbar: Crossbar
) -> None:
    # A Kazoo that answers well within the deadline: the crowd below needs its question in
    # flight (0.3 s), not near the deadline (at 0.5 s, a CI run under load timed out all five).
    h = reseller(
        switch, make_daemon, tmp_path, crossbar, crossbar_timeout=5, descendants_cache_size=2
    )
    tok = cluster().token("acc1")
    for acc in ("accA", "accB", "accC", "accA"):
        assert h.api.get(f"/v2/accounts/{acc}/channels", tok).status_code == 403
    # accA was pushed out by accB and accC, so it was asked again.
    assert [p for _, p in crossbar.asked].count("/v2/accounts/accA") == 2
    # An account id that is not one is never put into a URL for Kazoo.
    asked = len(crossbar.asked)
    for weird in ("acc%2F..%2Fadmin", "a%20b", "%2e%2e", "x" * 80):
        assert h.api.get(f"/v2/accounts/{weird}/channels", tok).status_code in (403, 404)
    assert len(crossbar.asked) == asked
    # Concurrent requests for one answer share one question.
    crossbar.delay = 0.3
    crossbar.allowed.add((tok, "accD"))
    results = []
    crowd = [
        gevent.spawn(lambda: results.append(h.api.get("/v2/accounts/accD/channels", tok)))
        for _ in range(5)
    ]
    gevent.joinall(crowd, timeout=10)
    assert [r.status_code for r in results] == [200] * 5
    assert [p for _, p in crossbar.asked].count("/v2/accounts/accD") == 1


def test_the_authenticator_takes_own_tokens_first_and_jwts_only_from_kazoo(tmp_path: Path):
    cfg = parse(config_dict([], kazoo=kazoo_section(tmp_path)), str(tmp_path / "c.toml"))
    auth = authenticator(cfg)
    own, reason = auth.authenticate(token("admin1"))
    assert own is not None and own.source == "" and reason == ""
    kz, _ = auth.authenticate(cluster().token("acc9", owner_id="u9"))
    assert kz is not None and (kz.account_id, kz.owner_id, kz.role) == ("acc9", "u9", "admin")
    assert kz.source.startswith(f"kazoo:{KID}:") and kz.expires is not None
    assert auth.authenticate("a.b")[1] == "unknown token"
    without = authenticator(parse(config_dict([]), "x.toml"))
    assert without.authenticate(cluster().token())[1] == "unknown token"


def test_kazoo_down_is_not_asked_by_every_request(
    switch: Any,
    make_daemon: Any,
    tmp_path: Path,
    crossbar: Crossbar,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tenant varying the account id while Kazoo hangs: a few questions, one warning line
    (before: a question and a line per account id). Kazoo back, questions resume."""
    caplog.set_level(logging.INFO, logger="channelsd")
    monkeypatch.setattr(kazoo_accounts, "BREAKER_SECONDS", 1.0)
    h = reseller(switch, make_daemon, tmp_path, crossbar)
    tok, other = cluster().token("acc1"), cluster().token("acc9")
    crossbar.delay = 3.0  # beyond crossbar_timeout (0.5 s)
    statuses: list[int] = []
    crowd = [
        gevent.spawn(
            lambda i=i: statuses.append(
                h.api.get(f"/v2/accounts/down{i}/channels", tok).status_code
            )
        )
        for i in range(100)
    ]
    gevent.joinall(crowd, timeout=30)
    assert statuses == [403] * 100
    assert len(crossbar.asked) <= 4  # at most 4 questions of one token out at once
    failed = [r for r in caplog.records if "kazoo account check failed" in r.getMessage()]
    assert len(failed) == 1, [r.getMessage() for r in failed]
    # Another tenant is refused at once too, without a question, while the breaker is open.
    asked = len(crossbar.asked)
    crossbar.allowed.add((other, "acc2"))
    assert h.api.get("/v2/accounts/acc2/channels", other).status_code == 403
    assert len(crossbar.asked) == asked
    # Kazoo is back: after the breaker's time, one question tries, and it answers again.
    crossbar.delay = 0.0
    gevent.sleep(1.1)
    assert h.api.get("/v2/accounts/acc2/channels", other).status_code == 200
    assert len(crossbar.asked) == asked + 1
    assert "crossbar answers again" in caplog.text
    assert tok not in caplog.text and other not in caplog.text


def test_one_token_has_a_few_questions_out_at_once(
    switch: Any, make_daemon: Any, tmp_path: Path, crossbar: Crossbar
) -> None:
    section = kazoo_section(tmp_path, crossbar_url=crossbar.url, crossbar_timeout=2)
    h = make_daemon([switch], kazoo=section)
    tok = cluster().token("acc1")
    accounts = [f"sub{i}" for i in range(12)]
    crossbar.allowed.update((tok, acc) for acc in accounts)
    crossbar.delay = 0.1
    statuses: list[int] = []
    crowd = [
        gevent.spawn(
            lambda acc=acc: statuses.append(
                h.api.get(f"/v2/accounts/{acc}/channels", tok).status_code
            )
        )
        for acc in accounts
    ]
    gevent.joinall(crowd, timeout=30)
    assert statuses == [200] * 12  # every one answered, in turns
    assert crossbar.most_in_flight == 4
    assert len(crossbar.asked) == 12
