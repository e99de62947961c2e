"""The daemon's configuration: one TOML file, checked against schemas/config.json at start.

Every problem is reported as a single ConfigError line naming the file, the key and what is
wrong, so an operator reading the journal sees the fix without a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from channelsd.gate import placeholders
from channelsd.kazoo_accounts import crossbar_address
from channelsd.kazoo_keys import KazooConfig, KazooKey, load_key
from channelsd.policy import DEFAULT_MEDIA, ROW_PLACEHOLDERS
from channelsd.tokens import Token
from channelsd.validate import (
    FORMAT_MESSAGES,
    KINDS,
    SchemaValidator,
    is_dialplan,
    is_file_path,
    is_media,
)

# Spec §2: Kazoo's custom channel variables first, then plain variables a non-Kazoo
# dialplan can set. Order matters: the first header present wins.
DEFAULT_IDENTITY: dict[str, list[str]] = {
    "account_id": ["variable_ecallmgr_Account-ID", "variable_account_id"],
    "owner_id": ["variable_ecallmgr_Owner-ID", "variable_owner_id"],
    "authorizing_id": ["variable_ecallmgr_Authorizing-ID", "variable_authorizing_id"],
    "authorizing_type": ["variable_ecallmgr_Authorizing-Type", "variable_authorizing_type"],
    "username": ["variable_ecallmgr_Username", "variable_user_name"],
    "realm": ["variable_ecallmgr_Realm", "variable_domain_name"],
    "bridge_id": ["variable_ecallmgr_Bridge-ID"],
}
DEFAULT_CCV_PREFIX = "variable_ecallmgr_"
# Clear of Kazoo's own ports on the same host (crossbar 8000/8443, blackhole 5555, Kamailio
# 5060/5064/5065/7000, CouchDB 5984/5986, RabbitMQ 5672) and FreeSWITCH's (ESL 8021,
# mod_kazoo 8031, xml_rpc 8080, verto 8081/8082).
DEFAULT_HTTP_PORT = 8910
# FreeSWITCH's built-in event-socket password: worth a warning, never a silent default.
FREESWITCH_DEFAULT_PASSWORD = "ClueCon"


class ConfigError(Exception):
    """A configuration problem, already phrased as the one line the operator will read."""


@dataclass(frozen=True)
class NodeConfig:
    name: str
    host: str
    port: int = 8021
    password: str = ""  # required by the schema: no silent default


@dataclass(frozen=True)
class SyncConfig:
    reconcile_interval: float = 60.0
    stale_grace: float = 30.0
    command_timeout: float = 5.0
    connect_timeout: float = 5.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    heartbeat_timeout: float = 65.0
    tombstone_ttl: float = 120.0


@dataclass(frozen=True)
class HttpLimits:
    """What one client, or a crowd, may hold of the HTTP server (README, Operations)."""

    max_connections: int = 1024
    max_streams: int = 256
    max_streams_per_token: int = 32
    max_streams_per_account: int = 64
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    body_timeout: float = 30.0
    send_timeout: float = 30.0


@dataclass(frozen=True)
class WebsocketConfig:
    """[websocket]: Kazoo's websocket (blackhole) for call events (channelsd.blackhole)."""

    enabled: bool = True
    path: str = "/websocket"
    port: int | None = None  # also its own port (Kazoo's 5555); None: only the API's
    host: str | None = None  # of that port; None: http.host
    max_sockets: int = 512
    # Per client address (the forwarded one behind http.trusted_proxies) and per token: one
    # client cannot take every socket (channelsd.blackhole.service).
    max_sockets_per_client: int = 64
    max_sockets_per_token: int = 16
    # A socket with no subscription (just opened, or all unsubscribed) is closed after this.
    subscribe_grace: float = 10.0
    max_bindings: int = 64
    max_message_bytes: int = 65536
    send_queue_bytes: int = 1024 * 1024
    ping_interval: float = 30.0


# Paths the API's own port answers itself: the websocket may not take one of them.
_RESERVED_PATHS = ("/v2", "/console", "/healthz", "/readyz", "/metrics")


@dataclass(frozen=True)
class IdentityConfig:
    chains: dict[str, tuple[str, ...]]
    ccv_prefix: str = DEFAULT_CCV_PREFIX
    device_owners: dict[str, str] = field(default_factory=dict)


# What the transferee of an attended transfer hears unless the request says: a stream every
# FreeSWITCH plays without files (a 440 Hz beep every 4 s). FreeSWITCH's own global default,
# local_stream://moh, needs its music installed; the reference switch could not play it, and
# att_xfer then started seconds late and left the transferor a zombie (§2.3, §2.6).
DEFAULT_MOH = "tone_stream://%(300,3700,440);loops=-1"
DEFAULT_INTERCEPT_ENDPOINTS = {
    "device": "user/{target_id}@{realm}",
    "user": "user/{target_id}@{realm}",
    "number": "loopback/{target_id}/{context}",
}


@dataclass(frozen=True)
class ActionsConfig:
    dialplan: str = "XML"
    context: str = "default"
    callflow_context: str = "default"
    attended_dialstring: str = "loopback/{target}/{context}"
    moh: str = DEFAULT_MOH
    record_dir: str = "/var/lib/freeswitch/recordings/channelsd"
    # Seconds: a bgapi originate's job result awaited (intercept, eavesdrop); what channelsd's
    # own commands started is assumed unreported this long at most (channelsd.inflight); a
    # metaflow waits this long at most for its previous module's events.
    job_wait: float = 1.0
    settle_timeout: float = 15.0
    chain_wait: float = 2.0
    intercept_endpoints: dict[str, str] = field(
        default_factory=lambda: dict(DEFAULT_INTERCEPT_ENDPOINTS)
    )
    # Tenant policy (channelsd.policy): what a request may name besides the defaults above.
    allowed_contexts: tuple[str, ...] = ()
    allowed_dialplans: tuple[str, ...] = ()
    allowed_media: tuple[str, ...] = DEFAULT_MEDIA
    media_template: str = ""


@dataclass(frozen=True)
class Config:
    path: str
    http_host: str = "127.0.0.1"
    http_port: int = DEFAULT_HTTP_PORT
    max_body_bytes: int = 65536
    http_limits: HttpLimits = field(default_factory=HttpLimits)
    # Peers whose X-Forwarded-For is believed (addresses or networks); none by default.
    trusted_proxies: tuple[str, ...] = ()
    nodes: tuple[NodeConfig, ...] = ()
    identity: IdentityConfig = field(
        default_factory=lambda: IdentityConfig({k: tuple(v) for k, v in DEFAULT_IDENTITY.items()})
    )
    system_wide_channels_list: bool = False
    sync: SyncConfig = field(default_factory=SyncConfig)
    tokens: tuple[Token, ...] = ()
    log_level: str = "info"
    log_format: str = "text"
    actions: ActionsConfig = field(default_factory=ActionsConfig)
    ready_timeout: float = 30.0
    event_buffer: int = 10000
    ended_calls_minutes: float = 15.0
    ended_calls_max: int = 10000
    websocket: WebsocketConfig = field(default_factory=WebsocketConfig)
    # [kazoo]: Kazoo-issued tokens accepted beside [[tokens]]; None when not configured.
    kazoo: KazooConfig | None = None


def _schema() -> dict[str, Any]:
    text = resources.files("channelsd").joinpath("schemas/config.json").read_text("utf-8")
    return json.loads(text)


def _dotted(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _first_error(data: dict[str, Any]) -> str | None:
    validator = SchemaValidator(_schema())
    errors = sorted(
        validator.iter_errors(data), key=lambda e: (len(e.path), list(map(str, e.path)))
    )
    if not errors:
        return None
    err = errors[0]
    key = _dotted(err.absolute_path)
    if err.validator == "additionalProperties":
        return f"{key}: unknown key ({err.message})"
    if err.validator == "required":
        return f"{key}: {err.message}"
    if err.validator == "pattern" and err.absolute_path and err.absolute_path[-1] == "sha256":
        return f"{key}: must be the 64 lower-case hex digits of the token's SHA-256"
    if err.absolute_path and err.absolute_path[-1] == "password":
        # jsonschema's messages quote the value, and this line reaches the journal (start-up,
        # a refused reload), where mask() knows no `password: '…'` form: name the key only.
        return (
            f"{key}: must be one word of visible characters (no spaces, line breaks or "
            "control characters; the value is not shown)"
        )
    return f"{key}: {err.message}"


def parse(data: dict[str, Any], path: str = "<memory>") -> Config:
    """Build a Config from already-decoded TOML data, or raise ConfigError."""
    problem = _first_error(data)
    if problem:
        raise ConfigError(f"{path}: {problem}")

    http = data.get("http", {})
    nodes = tuple(NodeConfig(**n) for n in data.get("nodes", []))
    names = [n.name for n in nodes]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{path}: nodes[{i}].name: duplicate node name {name!r}")

    ident = data.get("identity", {})
    chains = {k: tuple(ident.get(k, v)) for k, v in DEFAULT_IDENTITY.items()}
    identity = IdentityConfig(
        chains=chains,
        ccv_prefix=ident.get("custom_channel_vars_prefix", DEFAULT_CCV_PREFIX),
        device_owners=dict(ident.get("device_owners", {})),
    )

    sync = SyncConfig(**{k: float(v) for k, v in data.get("sync", {}).items()})
    if sync.backoff_max < sync.backoff_initial:
        raise ConfigError(f"{path}: sync.backoff_max: must not be below sync.backoff_initial")

    tokens = []
    seen: set[str] = set()
    for i, t in enumerate(data.get("tokens", [])):
        if t["sha256"] in seen:
            raise ConfigError(f"{path}: tokens[{i}].sha256: the same token is configured twice")
        seen.add(t["sha256"])
        if t["role"] == "user" and "owner_id" not in t:
            raise ConfigError(f"{path}: tokens[{i}].owner_id: a 'user' token needs its owner_id")
        tokens.append(
            Token(
                sha256=t["sha256"],
                account_id=t["account_id"],
                role=t["role"],
                owner_id=t.get("owner_id"),
                descendants=frozenset(t.get("descendants", ())),
                name=t.get("name", ""),
            )
        )

    actions = _actions(data.get("actions", {}), path)
    limits = _http_limits(http, path)
    proxies = _trusted_proxies(http.get("trusted_proxies", []), path)
    websocket = _websocket(data.get("websocket", {}), limits, path)
    kazoo = _kazoo(data["kazoo"], path) if "kazoo" in data else None

    return Config(
        path=path,
        http_host=http.get("host", "127.0.0.1"),
        http_port=http.get("port", DEFAULT_HTTP_PORT),
        max_body_bytes=http.get("max_body_bytes", 65536),
        http_limits=limits,
        trusted_proxies=proxies,
        nodes=nodes,
        identity=identity,
        system_wide_channels_list=data.get("api", {}).get("system_wide_channels_list", False),
        sync=sync,
        tokens=tuple(tokens),
        log_level=data.get("logging", {}).get("level", "info"),
        log_format=data.get("logging", {}).get("format", "text"),
        actions=actions,
        ready_timeout=float(data.get("systemd", {}).get("ready_timeout", 30)),
        event_buffer=data.get("api", {}).get("event_buffer", 10000),
        ended_calls_minutes=float(data.get("api", {}).get("ended_calls_minutes", 15)),
        ended_calls_max=data.get("api", {}).get("ended_calls_max", 10000),
        websocket=websocket,
        kazoo=kazoo,
    )


def _websocket(section: dict[str, Any], limits: HttpLimits, path: str) -> WebsocketConfig:
    cfg = WebsocketConfig(**section)
    if any(cfg.path == p or cfg.path.startswith(p + "/") for p in _RESERVED_PATHS):
        raise ConfigError(
            f"{path}: websocket.path: {cfg.path!r} is one of the API's own paths "
            f"({', '.join(_RESERVED_PATHS)})"
        )
    if "max_sockets" not in section:  # the default never exceeds a smaller connection limit
        cfg = replace(cfg, max_sockets=min(cfg.max_sockets, limits.max_connections))
    if cfg.max_sockets > limits.max_connections:
        raise ConfigError(
            f"{path}: websocket.max_sockets: must not exceed http.max_connections "
            "(every websocket holds a connection)"
        )
    return cfg


def _kazoo(section: dict[str, Any], path: str) -> KazooConfig:
    """[kazoo], with every public key read and checked now: `check` says what is wrong with a
    key file, and a reload with a broken one keeps the running keys."""
    base = Path(path).parent if path != "<memory>" else Path.cwd()
    keys: dict[str, KazooKey] = {}
    for kid, file in section["public_keys"].items():
        where = Path(file) if Path(file).is_absolute() else base / file
        try:
            keys[kid] = load_key(kid, str(where))
        except ValueError as exc:
            raise ConfigError(f"{path}: kazoo.public_keys.{kid}: {exc}") from None
    crossbar_url = section.get("crossbar_url", "")
    if crossbar_url:
        # The schema's pattern takes any netloc: read it here as KazooAccounts will, so that a
        # bad port or no host fails `check`, not `run` or a reload.
        try:
            crossbar_address(crossbar_url)
        except ValueError as exc:
            raise ConfigError(f"{path}: kazoo.crossbar_url: {exc}") from None
    return KazooConfig(
        keys=keys,
        default_role=section.get("default_role", "admin"),
        superduper_accounts=frozenset(section.get("superduper_accounts", ())),
        crossbar_url=crossbar_url,
        crossbar_timeout=float(section.get("crossbar_timeout", 2)),
        descendants_cache_seconds=float(section.get("descendants_cache_seconds", 300)),
        descendants_cache_size=section.get("descendants_cache_size", 10000),
    )


def _http_limits(http: dict[str, Any], path: str) -> HttpLimits:
    names = HttpLimits.__dataclass_fields__
    limits = HttpLimits(**{k: v for k, v in http.items() if k in names})
    if limits.max_streams > limits.max_connections:
        raise ConfigError(
            f"{path}: http.max_streams: must not exceed http.max_connections "
            "(every stream holds a connection)"
        )
    return limits


def _trusted_proxies(entries: list[str], path: str) -> tuple[str, ...]:
    for i, entry in enumerate(entries):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"{path}: http.trusted_proxies[{i}]: {entry!r} is not an address or network"
            ) from None
    return tuple(entries)


# Each template: the placeholders it may use, the kind of what it produces, and a sample of
# each placeholder, so that a template which cannot produce a valid value stops start-up.
_SAMPLES = {
    "target": "9001",
    "target_id": "9001",
    "context": "default",
    "realm": "example.com",
    "account_id": "0123456789abcdef0123456789abcdef",
    "media_id": "fedcba9876543210fedcba9876543210",
}
_TEMPLATES = {
    "attended_dialstring": (("target", "context", "realm", "account_id"), "endpoint"),
    "intercept_endpoints": (("target_id", "context", "realm", "account_id"), "endpoint"),
    "context": (ROW_PLACEHOLDERS, "context"),
    "callflow_context": (ROW_PLACEHOLDERS, "context"),
    "allowed_contexts": (ROW_PLACEHOLDERS, "context"),
    "allowed_media": (ROW_PLACEHOLDERS, "media-root"),
    "media_template": ((*ROW_PLACEHOLDERS, "media_id"), "media"),
}


def _check_template(template: str, kind_key: str, key: str, path: str) -> None:
    allowed, kind = _TEMPLATES[kind_key]
    try:
        names = placeholders(template)
    except ValueError as exc:
        raise ConfigError(f"{path}: {key}: bad template: {exc}") from None
    for name in names:
        if name not in allowed:
            raise ConfigError(
                f"{path}: {key}: unknown placeholder {{{name}}} (allowed: "
                + ", ".join("{" + a + "}" for a in allowed)
                + ")"
            )
    try:
        filled = template.format(**{n: _SAMPLES[n] for n in names})
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{path}: {key}: bad template: {exc}") from None
    if not KINDS[kind](filled):
        raise ConfigError(
            f"{path}: {key}: {template!r} would not give a valid {kind}: {FORMAT_MESSAGES[kind]}"
        )


def _actions(section: dict[str, Any], path: str) -> ActionsConfig:
    endpoints = dict(DEFAULT_INTERCEPT_ENDPOINTS)
    endpoints.update(section.get("intercept_endpoints", {}))
    for kind, template in endpoints.items():
        _check_template(
            template, "intercept_endpoints", f"actions.intercept_endpoints.{kind}", path
        )
    values = {k: v for k, v in section.items() if k != "intercept_endpoints"}
    for key in ("allowed_contexts", "allowed_dialplans", "allowed_media"):
        if key in values:
            values[key] = tuple(values[key])
    cfg = ActionsConfig(**values, intercept_endpoints=endpoints)
    for key in ("attended_dialstring", "context", "callflow_context"):
        _check_template(getattr(cfg, key), key, f"actions.{key}", path)
    if cfg.media_template:
        _check_template(cfg.media_template, "media_template", "actions.media_template", path)
    for i, template in enumerate(cfg.allowed_contexts):
        _check_template(template, "allowed_contexts", f"actions.allowed_contexts[{i}]", path)
    for i, root in enumerate(cfg.allowed_media):
        key = f"actions.allowed_media[{i}]"
        _check_template(root, "allowed_media", key, path)
        if not root.endswith("/") or root == "/":
            raise ConfigError(
                f"{path}: {key}: must be a directory ending in / (not / itself) or a scheme "
                "such as tone_stream://"
            )
    for i, name in enumerate((cfg.dialplan, *cfg.allowed_dialplans)):
        if not is_dialplan(name):
            key = "actions.dialplan" if i == 0 else f"actions.allowed_dialplans[{i - 1}]"
            raise ConfigError(f"{path}: {key}: {name!r} {FORMAT_MESSAGES['dialplan']}")
    if not is_media(cfg.moh):
        raise ConfigError(f"{path}: actions.moh: must be a media path or stream URL")
    if not is_file_path(cfg.record_dir):
        raise ConfigError(f"{path}: actions.record_dir: {FORMAT_MESSAGES['file-path']}")
    for key in ("job_wait", "settle_timeout", "chain_wait"):
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 600:
            raise ConfigError(f"{path}: actions.{key}: must be a number of seconds, 0 to 600")
    return cfg


def leg_variable(chain: tuple[str, ...]) -> str | None:
    """The channel variable a created leg is given a field through (`ecallmgr_Account-ID`):
    the first `variable_*` header of the field's identity chain, which the table then reads
    back from the leg's events (channelsd.actions._tenant_variables)."""
    return next((h[len("variable_") :] for h in chain if h.startswith("variable_")), None)


def service_warnings(cfg: Config) -> list[str]:
    """What `channelsd run` needs beyond a valid file: ConfigError when it cannot serve,
    warnings for what would work but surprise. `check` and `run` both use it, so a file
    that passes `check` is one `run` starts with."""
    if not cfg.nodes:
        raise ConfigError(
            f"{cfg.path}: nodes: no FreeSWITCH node configured "
            "(use `channelsd demo` to try it without one)"
        )
    warnings = []
    if not cfg.tokens and cfg.kazoo is None:
        warnings.append(
            f"{cfg.path}: tokens: none configured: every API request will get 401 "
            "(make one with `channelsd token new`)"
        )
    if cfg.kazoo is not None and cfg.kazoo.crossbar_url.startswith("http://"):
        _, host, _, _ = crossbar_address(cfg.kazoo.crossbar_url)  # (checked at load)
        if not _is_loopback(host):
            warnings.append(
                f"{cfg.path}: kazoo.crossbar_url: plain http to another host: the tokens "
                "channelsd asks about cross the network in clear (use https)"
            )
    for attr in ("account_id", "realm"):
        name = leg_variable(cfg.identity.chains.get(attr, ()))
        if name is None:
            warnings.append(
                f"{cfg.path}: identity.{attr}: no channel variable (variable_…) in the chain: "
                f"legs created by intercept, eavesdrop and attended transfer get no {attr} "
                "(listed system-wide only)"
            )
        elif not KINDS["variable"](f"{name}=x"):
            warnings.append(
                f"{cfg.path}: identity.{attr}: variable_{name} cannot be set by an originate: "
                "intercept, eavesdrop and attended transfer are refused (name it with a letter "
                "first, then letters, digits, _ and -)"
            )
    for i, node in enumerate(cfg.nodes):
        if node.password == FREESWITCH_DEFAULT_PASSWORD:
            warnings.append(
                f"{cfg.path}: nodes[{i}].password: FreeSWITCH's default password; set your own "
                "in event_socket.conf.xml and here"
            )
    return warnings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_problem(entry: dict[str, Any]) -> str | None:
    """What is wrong with one [[tokens]] entry, by the same schema as the file (so that
    `channelsd token new` never prints lines the config would refuse)."""
    return _first_error({"tokens": [entry]})


def load(path: str | Path) -> Config:
    """Read and check the TOML file at `path`; any problem is one ConfigError line."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: the file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse(data, str(p))
