"""Configuration: one validated model, loaded from YAML + environment + command-line flags.

Precedence, lowest first: built-in defaults, the YAML file, `OCR_WATCHER_*` environment variables
(and the retention names `MAX_JOB_*` as they are), then command-line flags. `load_config` resolves
and validates everything once; a bad value raises `ConfigError` naming the key, which the CLI turns
into exit code 78 (EX_CONFIG) so systemd does not restart a daemon that cannot work.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from .config_env import ENV_CONFIG_FILE, env_overrides

EX_CONFIG = 78

DEFAULT_IGNORE = [
    ".*",
    "~*",
    "*~",
    "*.tmp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.filepart",
    "Thumbs.db",
    "desktop.ini",
    "@eaDir",
    "__MACOSX",
    ".stfolder",
    ".Trashes",
]

EngineName = Literal["auto", "hybrid", "tesseract", "text", "vllm"]
VllmMode = Literal["markdown", "free", "figure"]


class ConfigError(Exception):
    """A configuration problem a person must fix; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IntakeConfig(_Section):
    settle_seconds: float | None = Field(
        None, ge=0, description="Unchanged size+mtime+inode for this long = complete. null: 10 local, 30 on NFS/SMB."
    )
    poll_interval_seconds: float = Field(2.0, gt=0, le=3600)
    rescan_interval_seconds: float = Field(60.0, gt=0)
    invalid_timeout_seconds: float = Field(
        300.0, ge=0, description="A settled file that never becomes a valid PDF/image is claimed and failed after this."
    )
    max_queued_jobs: int = Field(
        8, ge=1, description="Claim no more while this many of this daemon's jobs wait: leaves files for other daemons."
    )
    use_inotify: bool = True
    ignore: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORE))


class PipelineConfig(_Section):
    workers: int = Field(0, ge=0, le=512, description="Render and OCR processes; 0 = one per CPU core.")
    render_timeout_seconds: float = Field(120.0, gt=0)
    render_memory_mb: int = Field(2048, ge=64)
    page_timeout_seconds: float = Field(600.0, gt=0)
    page_retries: int = Field(2, ge=0, le=20)
    max_page_error_rate: float = Field(0.1, ge=0, le=1)
    fast_lane_pages: int = Field(
        10, ge=0, description="Each job's first N pages go ahead of older jobs' later pages (small jobs stay fast)."
    )
    shutdown_grace_seconds: float = Field(20.0, ge=0)
    work_dir: Path | None = Field(None, description="Scratch space for rendered pages; null = system temp dir.")


class TesseractConfig(_Section):
    command: str | None = Field(None, description="null: a system tesseract, else the one the pip wheel carries.")
    language: str = "eng"
    dpi: int = Field(300, ge=50, le=1200)
    max_side_px: int = Field(5000, ge=256, le=30000)
    psm: int = Field(3, ge=0, le=13)
    in_process: bool = Field(
        True, description="Read pages with libtesseract in OCR worker processes that keep the model loaded."
    )


class VllmManagedConfig(_Section):
    """How the daemon starts and supervises its own `vllm serve` (used when `vllm.servers` is empty)."""

    command: str | list[str] = Field(
        "vllm", description="The vllm executable: a path, a name on PATH, or a list of words (a wrapper)."
    )
    host: str = Field("127.0.0.1", description="Interface the managed server listens on.")
    port: int = Field(8000, ge=1, le=65535)
    extra_args: list[str] = Field(default_factory=list, description="More `vllm serve` flags, passed as they are.")
    startup_timeout_seconds: float = Field(
        1800.0, gt=0, description="Downloading and loading the model can take many minutes on a first start."
    )
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)


class VllmConfig(_Section):
    """DeepSeek-OCR behind vLLM's OpenAI-compatible server, one or more of them."""

    servers: list[str] = Field(
        default_factory=list, description="URLs of running servers (http://host:port); empty = start a managed one."
    )
    managed: VllmManagedConfig = Field(default_factory=VllmManagedConfig)
    model: str = Field("deepseek-ai/DeepSeek-OCR", description="Model name sent with each request (or -OCR-2).")
    mode: VllmMode = Field("markdown", description="markdown: layout + Markdown; free: plain OCR; figure: parse.")
    max_tokens: int = Field(
        8192, ge=16, le=131072, description="At most this many per page; never more than the server's context leaves."
    )
    max_in_flight: int = Field(256, ge=1, le=4096, description="Pages sent to the servers at once, all together.")
    request_timeout_seconds: float = Field(
        600.0, gt=0, description="One request; a slower answer is sent again (timeout_retries), then fails the page."
    )
    timeout_retries: int = Field(
        2, ge=0, le=10, description="How often a request that timed out is sent again before the page fails."
    )
    connect_retry_max_seconds: float = Field(
        600.0, ge=0, description="How long a page waits for an unreachable or erroring server before it fails."
    )
    loop_retry_temperatures: list[float] = Field(
        default_factory=lambda: [0.2, 0.5], description="A page that looped (finish_reason=length) is retried at these."
    )
    health_interval_seconds: float = Field(5.0, gt=0, le=3600)
    dpi: int = Field(144, ge=50, le=600)
    max_side_px: int = Field(3000, ge=256, le=30000)

    @field_validator("servers")
    @classmethod
    def _servers_are_http_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1].strip("/")) == 0:
                raise ValueError(f"{url!r} must be an http:// or https:// URL such as http://gpu1:8000")
        return [url.rstrip("/").removesuffix("/v1") for url in value]

    @field_validator("loop_retry_temperatures")
    @classmethod
    def _temperatures_in_range(cls, value: list[float]) -> list[float]:
        if any(not 0 <= t <= 2 for t in value):
            raise ValueError("temperatures must lie between 0 and 2")
        return value


class JobsConfig(_Section):
    heartbeat_lease_seconds: float = Field(
        60.0, gt=0, description="A job whose worker has not heart-beaten for this long is taken over."
    )
    fsync: bool = True
    group_writable: bool = Field(
        False, description="Write files 0664 and folders 0775 (umask 002): for outboxes shared by a group."
    )
    outbox_scan_interval_seconds: float = Field(5.0, gt=0)


class RetentionConfig(_Section):
    """Terminal jobs are deleted oldest first while any limit is exceeded; 0 = no limit."""

    max_job_storage_mb: float = Field(10240, ge=0, description="MiB of job folders in the outbox.")
    max_job_count: int = Field(1000, ge=0, description="Job folders, all statuses counted.")
    max_job_age_hours: float = Field(168, ge=0, description="Measured from when a job finished.")
    interval_seconds: float = Field(60.0, gt=0, description="How often the daemon applies the limits.")


class HttpConfig(_Section):
    enabled: bool = True
    host: str = Field(
        "127.0.0.1", description="Loopback by default; 0.0.0.0 exposes /metrics and the job API to the network."
    )
    port: int = Field(9464, ge=0, le=65535, description="0 = any free port (tests).")
    api: bool = Field(True, description="Serve the job API (/jobs...) and the web page (/) beside /metrics.")
    api_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer tokens for the job API; empty = no token needed. /health and /metrics stay open.",
    )
    max_upload_mb: float = Field(200, gt=0, description="Largest file accepted by POST /jobs/create, in MiB.")
    public_url: str | None = Field(
        None, description="The job API as clients reach it (https://ocr.example/): webhooks then carry result URLs."
    )

    @field_validator("api_tokens")
    @classmethod
    def _tokens_are_usable(cls, value: list[SecretStr]) -> list[SecretStr]:
        for token in value:
            secret = token.get_secret_value()
            if len(secret) < 16 or not secret.isprintable() or " " in secret:
                raise ValueError("each token must be at least 16 printable characters without spaces")
        return value


class WebhookConfig(_Section):
    """A URL told of each job that ends (docs/webhooks.md); retried until `give_up_after_seconds`."""

    url: str = Field(pattern=r"^https?://[^\s/]+", description="http:// or https:// address that takes the POST.")
    secret: SecretStr | None = Field(None, description="HMAC-SHA256 key (16+ characters); null: unsigned.")
    timeout_seconds: float = Field(10.0, gt=0, le=300, description="One attempt's limit.")
    give_up_after_seconds: float = Field(86400.0, gt=0, description="Then the delivery is undeliverable.")

    @field_validator("secret")
    @classmethod
    def _secret_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value


class CommandHookConfig(_Section):
    """A program run once after each job that ends, with the job in its environment (OCRW_*)."""

    argv: list[str] = Field(min_length=1, description="The program and its arguments (no shell).")
    timeout_seconds: float = Field(60.0, gt=0, le=86400)


OutputName = Literal["markdown", "txt", "pdf", "json"]  # result.md (always written), .txt, .pdf, .json


class ProfileConfig(_Section):
    priority: int = Field(0, ge=-1000, le=1000)
    engine: EngineName | None = None
    language: str | None = None
    dpi: int | None = Field(None, ge=50, le=1200)
    model: str | None = Field(None, description="vllm: a model other than vllm.model (the servers must serve it).")
    mode: VllmMode | None = Field(None, description="vllm: markdown, free or figure instead of vllm.mode.")
    # null: the default profile's; [] turns them off for this profile.
    webhooks: list[WebhookConfig] | None = None
    command: CommandHookConfig | None = None
    duplicates: Literal["process", "reuse"] | None = None  # null: the default profile's (process)
    outputs: list[OutputName] | None = Field(
        None, description="Result files besides result.md: txt, pdf (searchable), json; null: the default profile's."
    )


class Config(_Section):
    inbox: Path = Path("inbox")
    outbox: Path = Path("outbox")
    engine: EngineName = "auto"
    worker_id: str | None = Field(None, description="Stable identity of this daemon; null = the host name.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    intake: IntakeConfig = Field(default_factory=IntakeConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    tesseract: TesseractConfig = Field(default_factory=TesseractConfig)
    vllm: VllmConfig = Field(default_factory=VllmConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    profiles: dict[str, ProfileConfig] = Field(default_factory=dict)

    @field_validator("worker_id")
    @classmethod
    def _worker_id_is_a_plain_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or value.startswith(".") or len(value) > 128):
            raise ValueError("must be a non-empty name without '/' that does not start with '.'")
        return value

    @field_validator("profiles")
    @classmethod
    def _profile_names_are_folder_names(cls, value: dict[str, ProfileConfig]) -> dict[str, ProfileConfig]:
        for name in value:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"profile name {name!r} must be a plain folder name")
        return value

    @model_validator(mode="after")
    def _folders_do_not_overlap(self) -> Config:
        inbox, outbox = self.inbox.resolve(), self.outbox.resolve()
        if inbox == outbox or inbox in outbox.parents or outbox in inbox.parents:
            raise ValueError(f"inbox ({inbox}) and outbox ({outbox}) must not be the same folder or inside each other")
        return self

    # Derived values, resolved once.
    @property
    def resolved_worker_id(self) -> str:
        return self.worker_id or socket.gethostname()

    @property
    def worker_count(self) -> int:
        return self.pipeline.workers or os.cpu_count() or 1

    def profile(self, name: str) -> ProfileConfig:
        return self.profiles.get(name) or self.profiles.get("default") or ProfileConfig()

    def _inherited(self, profile: str, key: str) -> Any:
        """A named profile's own setting, else the default profile's (None: neither sets it)."""
        chosen = [getattr(p, key) for p in (self.profiles.get(profile), self.profiles.get("default")) if p]
        return next((value for value in chosen if value is not None), None)

    def webhooks(self, profile: str) -> list[WebhookConfig]:
        return self._inherited(profile, "webhooks") or []  # `webhooks: []` turns them off for a profile

    def command_hook(self, profile: str) -> CommandHookConfig | None:
        return self._inherited(profile, "command")

    def reuses_duplicates(self, profile: str) -> bool:
        return self._inherited(profile, "duplicates") == "reuse"

    def outputs(self, profile: str) -> frozenset[str]:
        """The result files a job of `profile` gets: its own `outputs`, else the default profile's;
        result.md always (the job API, duplicates and the web page read it)."""
        return frozenset(self._inherited(profile, "outputs") or ()) | {"markdown"}


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against config.example.yaml)"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Resolve defaults < file < environment < overrides into a validated Config."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get(ENV_CONFIG_FILE):
        path = Path(environ[ENV_CONFIG_FILE])
    tree: dict[str, Any] = read_yaml(path) if path is not None else {}
    # Relative folders in a config file are relative to that file, so a unit file can point at it;
    # those from the environment or the command line are relative to the working folder.
    for key in ("inbox", "outbox"):
        if path is not None and isinstance(tree.get(key), str) and not Path(tree[key]).is_absolute():
            tree[key] = str(path.resolve().parent / tree[key])
    tree = _merge(tree, env_overrides(environ))
    tree = _merge(tree, overrides or {})
    source = str(path) if path is not None else "defaults and environment"
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc
    return config.model_copy(update={"inbox": config.inbox.absolute(), "outbox": config.outbox.absolute()})
