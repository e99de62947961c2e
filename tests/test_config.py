"""Configuration: a bad file stops start-up with one clear line, never a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channelsd.config import ConfigError, load, parse
from channelsd.tokens import TokenStore, digest
from channelsd.validate import SchemaValidator

from conftest import values_of

ROOT = Path(__file__).resolve().parent.parent
VALID_NODE = '[[nodes]]\nname = "fs1"\nhost = "127.0.0.1"\npassword = "s3cret"\n'


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "channelsd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_the_shipped_example_config_is_valid() -> None:
    cfg = load(ROOT / "conf" / "channelsd.toml")
    assert cfg.http_host == "127.0.0.1"
    assert [n.name for n in cfg.nodes] == ["fs1"]
    assert cfg.identity.chains["account_id"] == (
        "variable_ecallmgr_Account-ID",
        "variable_account_id",
    )


def test_defaults_follow_the_spec() -> None:
    cfg = parse({})
    assert cfg.http_host == "127.0.0.1"
    assert cfg.system_wide_channels_list is False
    assert cfg.sync.reconcile_interval == 60
    assert cfg.identity.chains["realm"] == ("variable_ecallmgr_Realm", "variable_domain_name")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[http]\nport = 'eighty'\n", "http.port: 'eighty' is not of type 'integer'"),
        ("[http]\nport = 70000\n", "http.port: 70000 is greater than the maximum of 65535"),
        ('[[nodes]]\nhost = "x"\n', "nodes[0]: 'name' is a required property"),
        (
            '[[nodes]]\nname = "a b"\nhost = "x"\npassword = "p"\n',
            "nodes[0].name: 'a b' does not match",
        ),
        ("[sync]\nreconcile_intervall = 5\n", "sync: unknown key"),
        ("[api]\nsystem_wide_channels_list = 'yes'\n", "is not of type 'boolean'"),
        (
            '[[tokens]]\nsha256 = "abc"\naccount_id = "a"\nrole = "admin"\n',
            "tokens[0].sha256: must be the 64 lower-case hex digits",
        ),
        (
            f'[[tokens]]\nsha256 = "{"0" * 64}"\naccount_id = "a"\nrole = "root"\n',
            "tokens[0].role: 'root' is not one of",
        ),
        (
            f'[[tokens]]\nsha256 = "{"0" * 64}"\naccount_id = "a"\nrole = "user"\n',
            "tokens[0].owner_id: a 'user' token needs its owner_id",
        ),
        (VALID_NODE + VALID_NODE, "nodes[1].name: duplicate node name 'fs1'"),
        # (Python's `$` matches before a final newline; JSON Schema's does not: this one
        # reached the ESL `auth` line)
        (
            VALID_NODE.replace('"s3cret"', '"s3cret\\n"'),
            "nodes[0].password: must be one word of visible characters",
        ),
        (
            VALID_NODE.replace('"fs1"', '"fs1\\n"'),
            "nodes[0].name: 'fs1\\n' does not match",
        ),
        ("[http\nport = 1\n", "not valid TOML"),
    ],
)
def test_each_mistake_is_one_line_naming_file_and_key(
    tmp_path: Path, toml: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message


def test_the_command_line_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[sync]\nstale_grace = -1\n")
    for command in ("run", "check"):
        proc = run_cli(command, "-c", str(path))
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert lines == [
            f"channelsd: config error: {path}: sync.stale_grace: -1 is less than the minimum of 0"
        ]
        assert "Traceback" not in proc.stderr


def test_a_missing_file_is_one_line_too(tmp_path: Path) -> None:
    proc = run_cli("run", "-c", str(tmp_path / "nope.toml"))
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(
        "nope.toml: cannot read the file: No such file or directory"
    )
    assert len(proc.stderr.strip().splitlines()) == 1


def test_token_new_prints_a_token_whose_hash_it_prints(tmp_path: Path) -> None:
    proc = run_cli("token", "new", "--account", "acc1", "--role", "user", "--owner", "u1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    token_text = out.splitlines()[0].split(": ", 1)[1]
    toml = out.split("# paste into channelsd.toml:\n", 1)[1]
    assert f'sha256 = "{digest(token_text)}"' in toml
    path = tmp_path / "c.toml"
    path.write_text(toml)
    cfg = load(path)
    found = TokenStore(cfg.tokens).find(token_text)
    assert found is not None and (found.account_id, found.role, found.owner_id) == (
        "acc1",
        "user",
        "u1",
    )
    assert TokenStore(cfg.tokens).find(token_text + "x") is None


def test_a_user_token_without_owner_is_refused_by_the_cli() -> None:
    proc = run_cli("token", "new", "--account", "acc1", "--role", "user")
    assert proc.returncode == 2
    assert "needs --owner" in proc.stderr


def test_check_and_run_refuse_the_same_files_with_the_same_line(tmp_path: Path) -> None:
    no_nodes = tmp_path / "no-nodes.toml"
    no_nodes.write_text("[http]\nport = 0\n")
    no_password = tmp_path / "no-password.toml"
    no_password.write_text('[[nodes]]\nname = "fs1"\nhost = "127.0.0.1"\n')
    for path, expected in (
        (no_nodes, "nodes: no FreeSWITCH node configured"),
        (no_password, "nodes[0]: 'password' is a required property"),
    ):
        check, run = run_cli("check", "-c", str(path)), run_cli("run", "-c", str(path))
        assert check.returncode == run.returncode == 2
        assert check.stderr == run.stderr
        assert expected in check.stderr and len(check.stderr.strip().splitlines()) == 1


def test_check_warns_about_what_would_surprise(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[nodes]]\nname = "fs1"\nhost = "127.0.0.1"\npassword = "ClueCon"\n')
    proc = run_cli("check", "-c", str(path))
    assert proc.returncode == 0 and proc.stdout.strip() == f"{path}: ok (1 nodes, 0 tokens)"
    assert "tokens: none configured: every API request will get 401" in proc.stderr
    assert "nodes[0].password: FreeSWITCH's default password" in proc.stderr
    path.write_text(
        VALID_NODE + f'[[tokens]]\nsha256 = "{"0" * 64}"\naccount_id = "a"\nrole = "admin"\n'
    )
    proc = run_cli("check", "-c", str(path))
    assert proc.returncode == 0 and proc.stderr == ""


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        ('["Caller-Context"]', "identity.account_id: no channel variable (variable_…) in"),
        ('["variable__acct"]', "identity.account_id: variable__acct cannot be set by an"),
    ],
)
def test_check_warns_when_created_legs_cannot_inherit_the_account(
    tmp_path: Path, chain: str, expected: str
) -> None:
    """An identity chain read fine from events may give no variable an originate can set:
    the legs an action creates would be account-less, or the action refused. Said at start."""
    path = tmp_path / "c.toml"
    path.write_text(
        VALID_NODE
        + f'[[tokens]]\nsha256 = "{"0" * 64}"\naccount_id = "a"\nrole = "admin"\n'
        + f"[identity]\naccount_id = {chain}\n"
    )
    proc = run_cli("check", "-c", str(path))
    assert proc.returncode == 0 and expected in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_run_logs_the_same_warnings(tmp_path: Path) -> None:
    import signal
    import time

    path = tmp_path / "c.toml"
    path.write_text(
        '[http]\nport = 0\n[[nodes]]\nname = "fs1"\nhost = "127.0.0.1"\nport = 1\n'
        'password = "ClueCon"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "channelsd", "run", "-c", str(path)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if not line or "listening on" in line:
            break
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    text = "".join(lines)
    assert "WARNING channelsd " in text and "tokens: none configured" in text, text


@pytest.mark.parametrize(
    ("option", "value"),
    [("--account", "bad id with spaces"), ("--owner", "a/b"), ("--descendant", "x;y")],
)
def test_token_new_refuses_ids_the_config_would_refuse(option: str, value: str) -> None:
    args = ["token", "new", "--account", "acc1", "--role", "user", "--owner", "u1"]
    if option == "--descendant":
        args += [option, value]
    else:
        args[args.index(option) + 1] = value
    proc = run_cli(*args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"channelsd: {option}: {value!r} does not match")
    # ... and what the config would refuse is exactly that.
    entry = {"sha256": "0" * 64, "account_id": "acc1", "role": "admin"}
    key = {"--account": "account_id", "--owner": "owner_id", "--descendant": "descendants"}
    entry[key[option]] = [value] if option == "--descendant" else value
    with pytest.raises(ConfigError):
        parse({"tokens": [entry]})


# Kazoo's and FreeSWITCH's own ports on a shared host.
KAZOO_AND_FREESWITCH_PORTS = {
    8000, 8443, 5555, 5060, 5061, 5064, 5065, 5080, 7000, 5984, 5986, 15984, 15986, 5672,
    15672, 4369, 8021, 8031, 8080, 8081, 8082, 7443,
}  # fmt: skip


def test_the_default_port_is_clear_of_kazoo_and_freeswitch() -> None:
    from channelsd.config import DEFAULT_HTTP_PORT

    assert parse({}).http_port == DEFAULT_HTTP_PORT
    assert DEFAULT_HTTP_PORT not in KAZOO_AND_FREESWITCH_PORTS
    assert load(ROOT / "conf" / "channelsd.toml").http_port == DEFAULT_HTTP_PORT
    demo_help = run_cli("demo", "--help").stdout
    assert "--port PORT" in demo_help
    from channelsd.cli import _parser

    demo = _parser().parse_args(["demo"])
    assert demo.port == DEFAULT_HTTP_PORT


def test_http_limits_and_their_checks() -> None:
    limits = parse({}).http_limits
    assert (limits.max_connections, limits.max_streams) == (1024, 256)
    assert (limits.header_timeout, limits.idle_timeout, limits.body_timeout) == (10, 60, 30)
    assert limits.send_timeout == 30
    with pytest.raises(ConfigError, match="http.max_streams: must not exceed"):
        parse({"http": {"max_connections": 10, "max_streams": 11}})
    with pytest.raises(ConfigError, match=r"http.trusted_proxies\[1\]: 'proxy' is not"):
        parse({"http": {"trusted_proxies": ["10.0.0.0/8", "proxy"]}})
    with pytest.raises(ConfigError, match="http.header_timeout"):
        parse({"http": {"header_timeout": 0}})
    documented = (ROOT / "conf" / "channelsd.toml").read_text()
    for key in (
        "max_connections",
        "max_streams",
        "header_timeout",
        "idle_timeout",
        "body_timeout",
        "send_timeout",
        "trusted_proxies",
    ):
        assert f"\n{key} = " in documented or f"\n# {key} = " in documented, key


SCHEMA_PATTERNS = sorted(
    {
        p
        for path in (ROOT / "schemas").glob("*.json")
        for p in values_of(json.loads(path.read_text()), "pattern")
    }
)


@pytest.mark.parametrize("pattern", SCHEMA_PATTERNS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_every_schema_pattern_ends_where_the_text_ends(pattern: str, data: st.DataObject) -> None:
    """Every `pattern` of the shipped schemas is read as JSON Schema reads it (ECMA-262): a
    value it matches is taken, and the same value with a line break after it is not."""
    validator = SchemaValidator({"type": "string", "pattern": pattern})
    value = data.draw(st.from_regex(pattern, fullmatch=True).filter(lambda v: "\n" not in v))
    assert validator.is_valid(value)
    for tail in ("\n", "\r\n", "\n\n"):
        assert not validator.is_valid(value + tail)


def test_the_schema_patterns_were_found() -> None:
    assert len(SCHEMA_PATTERNS) >= 10


@pytest.mark.parametrize(
    "password",
    # A NUL passed `[^\s]` but the ESL writer refuses it (every connect failed); the others
    # are line breakers in one engine and not the other (Python's \s has \x85 and \x1c-\x1f,
    # ECMA-262's has neither), or controls no password holds.
    [
        "s3cret\\u0000x",
        "s3\\u0001cret",
        "s3cret\\u001b",
        "s3cret\\u007f",
        "s3\\u0085x",
        "s3\\u001cx",
    ],
)
def test_a_password_with_a_control_character_is_refused_and_not_shown(
    tmp_path: Path, password: str
) -> None:
    """The password goes on the ESL `auth` line, and the refusal goes to the journal (start-up,
    a refused reload) where mask() knows no `password:` form: the line names the key only."""
    path = tmp_path / "bad.toml"
    path.write_text(VALID_NODE.replace('"s3cret"', f'"{password}"'))
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value).removeprefix(f"{path}: ")
    assert message.startswith("nodes[0].password: must be one word of visible characters")
    assert "s3" not in message


def test_a_password_of_the_wrong_type_is_not_shown(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(VALID_NODE.replace('"s3cret"', "31337"))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert "31337" not in str(info.value).removeprefix(f"{path}: ")


@pytest.mark.parametrize(
    ("pattern", "taken", "refused"),
    [
        ("^a$", ["a"], ["a\n", "ab"]),
        ("^a\\$$", ["a$"], ["a", "a$\n"]),
        ("^[$]+$", ["$$"], ["$\n", ""]),
        ("^[^]]$", ["a]", "]]"], ["]", "a", "a]\n"]),  # ECMA: [^] then "]"
        ("^x[]$", [], ["x", "x]", "x\n"]),
        ("^x[^]$", ["x\n", "xy"], ["x", "xyz"]),
        ("^(a|b$)c?$", ["a", "ac", "b"], ["b\n", "a\n"]),
    ],
)
def test_patterns_read_as_ecma_reads_them(
    pattern: str, taken: list[str], refused: list[str]
) -> None:
    validator = SchemaValidator({"type": "string", "pattern": pattern})
    assert [v for v in taken if not validator.is_valid(v)] == []
    assert [v for v in refused if validator.is_valid(v)] == []
