"""The daemon config (``servesync.yaml``): load, validate against its schema, freeze.

Called by the CLI at start and on SIGHUP. Defaults are those of a production
GPU head node, so ``servesync validate`` with no config judges files as the
cluster will; the config schema holds the defaults of the allow-lists. Reads
one file (and the packaged schema); no other side effects.

Config errors quote no value of the file: a YAML error names the line,
column and problem, never the line itself (PyYAML's own message prints a
snippet of it, which may hold a secret of ``serving.replica_env`` or a
``git_url`` with a token); a schema error shows values only through
:func:`servesync.schemas.message`.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from servesync import schemas
from servesync.errors import ConfigError
from servesync.redaction import kind, quote

DEFAULT_CONFIG_PATH = "/etc/servesync/servesync.yaml"
CONFIG_ENV = "SERVESYNC_CONFIG"

DEFAULT_ENGINE_KWARGS_DENY = (
    "model",
    "tokenizer",
    "download_dir",
    "trust_remote_code",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "device",
    "distributed_executor_backend",
)
DEFAULT_ENV_DENY = ("LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONSTARTUP")


def _serving_schema(key: str) -> dict[str, Any]:
    node: dict[str, Any] = schemas.load("servesync-config")["properties"]["serving"]
    return dict(node["properties"][key])


DEFAULT_ENGINE_KWARGS_ALLOWED: tuple[str, ...] = tuple(
    _serving_schema("engine_kwargs_allowed")["default"])
"""The engine_kwargs keys users may set by default; the config schema holds the list."""
DEFAULT_ENV_ALLOWED: tuple[str, ...] = tuple(_serving_schema("env_allowed")["default"])
"""The env names (``PREFIX*``: prefixes) users may set by default; from the config schema."""
NEVER_ALLOWED_ENGINE_KWARGS: Mapping[str, str] = MappingProxyType({
    key: group["description"]
    for group in _serving_schema("engine_kwargs_allowed")["items"]["allOf"]
    for key in group["not"]["enum"]
})
"""engine_kwargs keys no config can allow -> why ("takes a path on the node", ...).
From the config schema, which refuses them in ``serving.engine_kwargs_allowed``."""


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """Where the desired state comes from: a directory, or a git repository."""

    path: str | None = "/srv/servesync/desired_state"  # a plain dir or a local git working copy
    git_url: str | None = None  # a remote (or local) repository cloned into state_dir
    branch: str = "main"
    subpath: str = ""  # folder inside the repository that holds users/
    poll_interval_s: float = 15.0
    verify_signatures: bool = False
    trusted_keys_file: str | None = None  # armored public keys imported into a private keyring
    # The status page's link to a file in the operator's git web UI: an http(s)
    # URL template with {revision}, {path} and {line} (None: no link)
    web_url: str | None = None

    def __post_init__(self) -> None:
        """The schema refuses a non-http(s) ``web_url`` in a config file; this
        refuses it in a SourceConfig built in code too, and any placeholder but
        the three it fills."""
        if self.web_url is not None:
            check_web_url(self.web_url)


WEB_URL_FIELDS = ("revision", "path", "line")
"""The placeholders of ``source.web_url``, each written ``{name}``."""
_WEB_URL_EXAMPLE = "https://git.example.com/org/desired/blob/{revision}/{path}#L{line}"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def check_web_url(template: str) -> None:
    """Raise :class:`ConfigError` unless ``template`` is an ``http://`` or
    ``https://`` URL with a host whose only placeholders are
    :data:`WEB_URL_FIELDS` (a ``javascript:`` or ``data:`` URL would run in
    the status page's reader's browser when clicked)."""
    where = "source.web_url"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in template):
        raise ConfigError(f"{where}: must not contain whitespace or control characters")
    scheme, _, rest = template.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if scheme not in ("http", "https") or not host or "{" in host:
        raise ConfigError(f"{where}: must be an http:// or https:// URL template with a "
                          f"host, e.g. {_WEB_URL_EXAMPLE}")
    unknown = sorted({m for m in _PLACEHOLDER.findall(template) if m not in WEB_URL_FIELDS})
    if unknown:
        raise ConfigError(f"{where}: unknown placeholder {{{unknown[0][:40]}}}: only "
                          "{revision}, {path} and {line} are filled in")
    if any(c in _PLACEHOLDER.sub("", template) for c in "{}"):
        raise ConfigError(f"{where}: a {{ or }} that opens or closes no placeholder (only "
                          "{revision}, {path} and {line} are filled in)")


@dataclass(frozen=True, slots=True)
class RayConfig:
    address: str = "auto"  # "auto" (ray start --head), "local" (in-process), or ray://host:port
    num_cpus: int | None = None  # only for address "local"
    namespace: str = "serve"


CAPABILITY_RE = re.compile(r"^(0|[1-9][0-9]?)\.(0|[1-9][0-9]?)(?!\n)$")
"""A compute capability, ``major.minor`` (``8.0``, ``8.9``, ``10.0``)."""


def capability(value: object) -> tuple[int, int] | None:
    """``"8.9"`` (or the YAML number ``8.9``) as ``(8, 9)``; None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = f"{value:.1f}" if isinstance(value, int) else str(value)
    match = CAPABILITY_RE.match(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass(frozen=True, slots=True)
class Bounds:
    """The range a model file's override may take (both ends included)."""

    min: float
    max: float

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int | float) and self.min <= value <= self.max


@dataclass(frozen=True, slots=True)
class RolloutBounds:
    """What a model file's ``rollout`` may ask (``serving.rollout_bounds``)."""

    deploy_timeout_s: Bounds = Bounds(60, 3600)
    max_surge_percent: Bounds = Bounds(0, 100)
    max_unavailable_percent: Bounds = Bounds(1, 100)

    def items(self) -> tuple[tuple[str, Bounds], ...]:
        return (("deploy_timeout_s", self.deploy_timeout_s),
                ("max_surge_percent", self.max_surge_percent),
                ("max_unavailable_percent", self.max_unavailable_percent))


@dataclass(frozen=True, slots=True)
class Quota:
    """Limits on the sum over one user's enabled models; None is no limit
    (README, Quotas)."""

    gpus: int | None = None  # GPUs per replica x replicas (autoscaling: max_replicas)
    replicas: int | None = None  # num_replicas, or autoscaling's max_replicas
    models: int | None = None  # enabled models

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.gpus, self.replicas, self.models))


@dataclass(frozen=True, slots=True)
class Quotas:
    """``serving.quotas``: the default quota and the per-user ones, each already
    merged over the default (a key a user's entry leaves out keeps the default's)."""

    default: Quota = field(default_factory=Quota)
    users: Mapping[str, Quota] = field(default_factory=dict)

    def for_user(self, user_id: str) -> Quota:
        return self.users.get(user_id, self.default)

    @property
    def active(self) -> bool:
        """Does any user have a limit? (No: the quota pass is skipped.)"""
        return self.default.limited or any(q.limited for q in self.users.values())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Quotas:
        """From the schema-valid ``serving.quotas`` mapping."""
        default = dict(data.get("default") or {})
        users = {user: Quota(**{**default, **dict(entry or {})})
                 for user, entry in (data.get("users") or {}).items()}
        return cls(default=Quota(**default), users=users)


USER_ID_FIELD = "{user_id}"
"""What ``serving.lora.prefix`` says where the user's folder name goes."""


@dataclass(frozen=True, slots=True)
class LoraOffer:
    """``serving.lora``: where each user's LoRA adapters must lie in object
    storage (README, LoRA adapters). Endpoint and credentials are not here:
    the Ray nodes' environment carries them to every replica."""

    prefix: str  # a template with {user_id}, e.g. s3://adapters/{user_id}/
    users: Mapping[str, str] = field(default_factory=dict)  # user_id -> own prefix
    max_adapters_per_replica: int = 4

    def __post_init__(self) -> None:
        if USER_ID_FIELD not in self.prefix:
            raise ConfigError(f"serving.lora.prefix must contain {USER_ID_FIELD} (each user "
                              "gets a prefix of their own)")

    def prefix_for(self, user_id: str) -> str:
        """The user's prefix, always ending in ``/``."""
        prefix = self.users.get(user_id) or self.prefix.replace(USER_ID_FIELD, user_id)
        return prefix.rstrip("/") + "/"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> LoraOffer:
        """From the schema-valid ``serving.lora`` mapping."""
        return cls(prefix=str(data["prefix"]),
                   users={str(k): str(v) for k, v in (data.get("users") or {}).items()},
                   max_adapters_per_replica=int(data.get("max_adapters_per_replica", 4)))


@dataclass(frozen=True, slots=True)
class ServingConfig:
    accelerator_type: str = "gpu"  # "cpu", "gpu" (any GPU), or a Ray accelerator type e.g. "H20"
    http_host: str = "0.0.0.0"
    http_port: int = 8000
    openai_base_url: str | None = None  # what users are told; default http://<host>:<port>/v1
    # Users may set only these engine_kwargs keys and env names (a trailing *
    # makes an env entry a prefix); the deny lists apply on top (deny wins).
    engine_kwargs_allowed: tuple[str, ...] = DEFAULT_ENGINE_KWARGS_ALLOWED
    env_allowed: tuple[str, ...] = DEFAULT_ENV_ALLOWED
    engine_kwargs_deny: tuple[str, ...] = DEFAULT_ENGINE_KWARGS_DENY
    env_deny: tuple[str, ...] = DEFAULT_ENV_DENY
    allow_hub_ids: bool = True
    deploy_timeout_s: float = 900.0  # a model not RUNNING by then is FAILED
    # Extra replicas Serve may start during an update before stopping old ones:
    # 100 keeps a 1-replica model serving through a spec change (needs room for
    # one more replica; without it the old one keeps serving and the update
    # waits); 0 replaces in place, with a gap for a 1-replica model.
    max_surge_percent: int = 100
    # Replicas of the OpenAI gateway (1 logical CPU each): with 2, one dying
    # costs only the requests in flight on it (Serve's proxy sends new ones to
    # the other); 1 on a tiny cluster.
    gateway_replicas: int = 2
    replica_env: dict[str, str] = field(default_factory=dict)  # operator-set env for every replica
    quotas: Quotas = field(default_factory=Quotas)  # per-user caps (README, Quotas)
    # Ray Serve's rolling_update_percentage, as a percent: how many replicas an
    # update replaces at a time (None: Ray's default, 20 %).
    max_unavailable_percent: int | None = None
    # Host memory a model file may reserve per replica (GiB); None: no cap.
    max_memory_gb_per_replica: float | None = None
    # The GPU types the cluster offers (Ray accelerator type names) -> their
    # compute capability ("8.0"): what model files may ask for by name or by
    # min_compute_capability.
    accelerator_types: dict[str, str] = field(default_factory=dict)
    rollout_bounds: RolloutBounds = RolloutBounds()
    lora: LoraOffer | None = None  # None: no model may serve LoRA adapters

    def __post_init__(self) -> None:
        """The schema refuses never-allowed keys and bad values in a config
        file; this refuses them in a ServingConfig built in code too (tests,
        tools), and checks what a schema cannot: the fields against each other."""
        for key in self.engine_kwargs_allowed:
            reason = NEVER_ALLOWED_ENGINE_KWARGS.get(key)
            if reason is not None:
                raise ConfigError(f"serving.engine_kwargs_allowed: {key!r} can never be "
                                  f"allowed: it {reason}")
        for name, cap in self.accelerator_types.items():
            if capability(cap) is None:
                raise ConfigError(f"serving.accelerator_types: {name}: {quote(cap)} is not a "
                                  "compute capability (major.minor, e.g. \"8.0\")")
        if self.accelerator_types and self.cpu_platform:
            raise ConfigError("serving.accelerator_types: this cluster has no GPUs "
                              "(serving.accelerator_type cpu): leave it empty")
        if self.accelerator_types and not self.generic_accelerator \
                and self.accelerator_type not in self.accelerator_types:
            raise ConfigError(f"serving.accelerator_type {self.accelerator_type!r} is not in "
                              "serving.accelerator_types: list the cluster's default type "
                              "there too")
        for name, bounds in self.rollout_bounds.items():
            if bounds.min > bounds.max:
                raise ConfigError(f"serving.rollout_bounds.{name}: min {bounds.min:g} is "
                                  f"greater than max {bounds.max:g}")

    @property
    def generic_accelerator(self) -> bool:
        """``accelerator_type`` names a platform ("cpu", "gpu"), not a GPU type."""
        return self.accelerator_type.lower() in ("cpu", "gpu")

    def offered_accelerators(self) -> tuple[str, ...]:
        """The GPU types a model file may name: ``accelerator_types``, and the
        cluster's default type when it is a specific one."""
        default = () if self.generic_accelerator else (self.accelerator_type,)
        return tuple(dict.fromkeys((*self.accelerator_types, *default)))

    @property
    def cpu_platform(self) -> bool:
        return self.accelerator_type.lower() == "cpu"

    @property
    def base_url(self) -> str:
        if self.openai_base_url:
            return self.openai_base_url.rstrip("/")
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::") else self.http_host
        return f"http://{host}:{self.http_port}/v1"


NOTIFY_EVENTS = ("QUEUED", "DEPLOYING", "RUNNING", "DEGRADED", "FAILED", "DELETING", "STOPPED")
"""The states a sink may be told a model entered (the config schema's enum)."""
DEFAULT_NOTIFY_EVENTS = ("FAILED", "DEGRADED", "RUNNING")


@dataclass(frozen=True, slots=True)
class NotificationSink:
    """One webhook of ``notifications`` (README, Notifications). ``url`` may hold
    a token: it is never logged nor shown (``repr`` leaves it out); code names a
    sink by ``name``. The secret is read from ``secret_file`` when a body is
    signed, never kept here."""

    name: str
    url: str = field(repr=False)
    events: tuple[str, ...] = DEFAULT_NOTIFY_EVENTS
    secret_file: str | None = None
    timeout_s: float = 5.0
    max_backoff_s: float = 60.0
    users: tuple[str, ...] = ()  # the user ids whose model files may name it; "*": all
    max_age_s: float = 86400.0  # an entry not delivered by then is dropped
    max_attempts: int = 1000  # ... or after this many failed attempts
    max_pending: int = 1000  # entries kept per sink; beyond it the oldest are dropped

    def wants(self, state: str) -> bool:
        return state in self.events

    def allows(self, user_id: str) -> bool:
        """Whether a model file of ``user_id`` may name this sink (absent
        ``users``: nobody; ``"*"``: every user)."""
        return "*" in self.users or user_id in self.users


@dataclass(frozen=True, slots=True)
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    state_dir: str = "/var/lib/servesync"
    status_dir: str = "/var/lib/servesync/status"
    storage_root: str = "/private"
    ray: RayConfig = field(default_factory=RayConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    tick_interval_s: float = 30.0
    path: str | None = None  # the file it was read from, if any
    notifications: tuple[NotificationSink, ...] = ()  # webhook sinks, by name

    def sink(self, name: str) -> NotificationSink | None:
        return next((s for s in self.notifications if s.name == name), None)

    def sinks_of(self, user_id: str) -> tuple[str, ...]:
        """The names of the sinks a model file of ``user_id`` may name."""
        return tuple(s.name for s in self.notifications if s.allows(user_id))

    @property
    def source_root(self) -> Path:
        """The folder holding ``users/`` for a directory source."""
        base = Path(self.source.path or ".")
        return base / self.source.subpath if self.source.subpath else base


def is_remote_url(value: str) -> bool:
    """A URL git would fetch from, not a local path: ``scheme://...``, or git's
    scp syntax ``user@host:path`` / ``host:path`` (not a Windows drive ``C:``)."""
    head = value.split("/", 1)[0]
    return "://" in value or (":" in head and len(head.split(":", 1)[0]) > 1)


def _resolve(base: Path, value: str | None, *, url: bool = False) -> str | None:
    """``value`` as an absolute path (relative to ``base``); with ``url``, a
    remote URL is kept as it is."""
    if value is None or (url and is_remote_url(value)):
        return value
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p).resolve())


def from_mapping(data: dict[str, Any], *, base_dir: Path, path: str | None = None) -> Config:
    """Build a Config from an already schema-valid mapping; relative paths are
    taken relative to ``base_dir`` (the config file's folder)."""
    src = dict(data.get("source") or {})
    serving = dict(data.get("serving") or {})
    ray = dict(data.get("ray") or {})
    for key in ("engine_kwargs_allowed", "env_allowed", "engine_kwargs_deny", "env_deny"):
        if key in serving:
            serving[key] = tuple(serving[key])
    if "replica_env" in serving:
        serving["replica_env"] = dict(serving["replica_env"])
    if "quotas" in serving:
        serving["quotas"] = Quotas.from_mapping(serving["quotas"])
    if "accelerator_types" in serving:
        serving["accelerator_types"] = {
            str(k): v if isinstance(v, str) else f"{v:.1f}" if isinstance(v, int) else str(v)
            for k, v in serving["accelerator_types"].items()}
    if "rollout_bounds" in serving:
        defaults = dict(RolloutBounds().items())
        serving["rollout_bounds"] = RolloutBounds(**{
            name: Bounds(min=limits.get("min", defaults[name].min),
                         max=limits.get("max", defaults[name].max))
            for name, limits in serving["rollout_bounds"].items()})
    if "lora" in serving:
        serving["lora"] = LoraOffer.from_mapping(serving["lora"])
    if "git_url" in src and "path" not in src:
        src["path"] = None
    for key in ("path", "git_url", "trusted_keys_file"):
        if key in src:
            src[key] = _resolve(base_dir, src[key], url=key == "git_url")
    top: dict[str, Any] = {}
    for key in ("state_dir", "status_dir", "storage_root"):
        if key in data:
            top[key] = _resolve(base_dir, data[key])
    if "state_dir" in top and "status_dir" not in top:
        top["status_dir"] = str(Path(top["state_dir"]) / "status")
    if "tick_interval_s" in data:
        top["tick_interval_s"] = float(data["tick_interval_s"])
    if "notifications" in data:
        top["notifications"] = _sinks(data["notifications"], base_dir)
    return Config(
        source=SourceConfig(**src),
        ray=RayConfig(**ray),
        serving=ServingConfig(**serving),
        path=path,
        **top,
    )


def _sinks(entries: list[dict[str, Any]], base_dir: Path) -> tuple[NotificationSink, ...]:
    """The schema-valid ``notifications`` as sinks, names unique, each
    ``secret_file`` made absolute."""
    sinks: list[NotificationSink] = []
    for i, entry in enumerate(entries):
        where = f"/notifications/{i}"
        if any(s.name == entry["name"] for s in sinks):
            raise ConfigError(f"{where}/name: sink name {quote(entry['name'])} is used twice "
                              "(sink names are unique: model files name them in notify)")
        # not read here: `servesync validate`/`status` load this config as
        # users who may not read the key; the daemon checks it when it starts
        secret = _resolve(base_dir, entry.get("secret_file"))
        _check_url(entry["url"], f"{where}/url")
        sinks.append(NotificationSink(
            name=entry["name"], url=entry["url"],
            events=tuple(entry.get("events", DEFAULT_NOTIFY_EVENTS)), secret_file=secret,
            timeout_s=float(entry.get("timeout_s", 5.0)),
            max_backoff_s=float(entry.get("max_backoff_s", 60.0)),
            users=tuple(str(u) for u in entry.get("users", ())),
            max_age_s=float(entry.get("max_age_s", 86400.0)),
            max_attempts=int(entry.get("max_attempts", 1000)),
            max_pending=int(entry.get("max_pending", 1000))))
    return tuple(sinks)


def _check_url(url: str, where: str) -> None:
    """A URL the delivery can use: no whitespace or control characters, a
    host, a numeric port. The value is never shown (it may hold a token)."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise ConfigError(f"{where}: must not contain whitespace or control characters "
                          "(value not shown)")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{where}: not a valid URL (value not shown)") from None
    if not parts.hostname:
        raise ConfigError(f"{where}: has no host (value not shown)")


def _message(error: Any) -> str:
    """The schema's message (values quoted only through :func:`schemas.message`),
    except: a key that can never be allowed says why (not the whole list);
    under ``serving.replica_env`` values are secrets more often than not, so
    say only what was expected."""
    where = list(error.absolute_path)[:2]
    path = list(error.absolute_path)
    if path == ["source", "web_url"] and error.validator == "pattern":
        return f"must be an http:// or https:// URL template, e.g. {_WEB_URL_EXAMPLE}"
    if path[:1] == ["notifications"] and path[2:3] == ["url"]:  # may hold a token
        return f"must be an http:// or https:// URL ({error.validator}; value not shown)"
    if path[:1] == ["notifications"] and len(path) <= 2:  # an item may be a bare URL
        if error.validator == "type":
            return f"must be of type {error.validator_value} (value not shown)"
        if error.validator in ("required", "additionalProperties"):
            return str(error.message)  # names keys, never a value
        return f"invalid ({error.validator}; value not shown)"
    if where == ["serving", "engine_kwargs_allowed"] and error.validator == "not":
        return (f"{quote(error.instance)} can never be allowed: it "
                f"{error.schema.get('description', 'is refused')}")
    if where != ["serving", "replica_env"]:
        return schemas.message(error)
    if error.validator == "type":
        return f"must be of type {error.validator_value} (value not shown)"
    if error.validator == "additionalProperties":
        return str(error.message)  # names the offending key, never a value
    return f"invalid ({error.validator}; value not shown)"


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the config file; ``None`` tries $SERVESYNC_CONFIG, then the default
    path, then falls back to built-in defaults. Raises ConfigError naming the
    file and field when the file is unreadable or invalid."""
    explicit = path is not None or CONFIG_ENV in os.environ
    chosen = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    if not chosen.exists():
        if explicit:
            raise ConfigError(f"{chosen}: config file not found")
        return Config()
    try:
        text = chosen.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{chosen}: cannot read config: {e}") from e
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        # not chained: the YAML error's own text quotes the line
        raise ConfigError(f"{chosen}: invalid YAML: {yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{chosen}: config must be a mapping, not a {kind(data)}")
    errors = schemas.validator("servesync-config").iter_errors(data)
    first = min(errors, key=lambda e: list(e.absolute_path), default=None)
    if first is not None:
        pointer = "/" + "/".join(str(p) for p in first.absolute_path)
        raise ConfigError(f"{chosen}: {pointer}: {_message(first)}")
    try:
        return from_mapping(data, base_dir=chosen.parent.resolve(), path=str(chosen))
    except ConfigError as e:  # a rule across fields (ServingConfig.__post_init__)
        raise ConfigError(f"{chosen}: {e}") from None


def yaml_problem(error: yaml.YAMLError) -> str:
    """``line 3, column 7: while scanning ...; found ...``: where and what, never
    the source text (``str(error)`` of PyYAML prints the line with a caret)."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = "; ".join(p for p in (error.context, error.problem) if p)
        return where + (what or type(error).__name__)
    position = getattr(error, "position", None)  # a ReaderError: a bad character
    reason = getattr(error, "reason", None)
    if isinstance(position, int) and reason:
        return f"character {position}: {reason}"
    return type(error).__name__
