"""Configuration: a bad file stops start-up with one clear line, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from channelsd.config import ConfigError, load, parse
from channelsd.tokens import TokenStore, digest

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
