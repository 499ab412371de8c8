"""One frozen settings object; the CLI fills it from flags and ``ASTRIA_MOCK_*`` variables."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

DEFAULT_MAX_BODY_BYTES = 50 * 1024 * 1024
SETTINGS_VARIABLE = "ASTRIA_MOCK_SETTINGS_JSON"
"""Where ``serve --workers N`` hands its settings to the processes it starts."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".astria-mock")
    ephemeral: bool = False
    clock: str = "real"
    public_url: str | None = None
    log_level: str = "info"
    api_keys: tuple[str, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    train_seconds: float = 3.0
    prompt_seconds: float = 2.0
    prompt_polls: int | None = None
    idempotency: bool = False
    strict: bool = False
    rate_limit: str | None = None
    fault_seed: int = 0
    admin_token: str | None = None
    scenario: Path | None = None
    seed_file: Path | None = None
    callback_body: str = "wrapped"
    callback_retries: int = 0
    callback_timeout: float = 10.0
    callback_allow: tuple[str, ...] = ()
    db: str | None = None
    """A database URL (``postgresql://...``); None keeps SQLite in ``data_dir``."""
    workers: int = 1
    generate: bool = True
    """Whether this process renders due prompts; off, ``astria-mock worker`` processes do."""
    lease_seconds: float = 10.0
    """How long a replica holds work it took before another may take it over."""
    backend: str = "placeholder"
    """What renders prompts: ``placeholder`` images, or ``diffusers`` (the ``gpu`` extra)."""
    weights: Path | None = None
    """The diffusers backend's local weights folder (docs/gpu.md); nothing downloads."""

    @property
    def base_url(self) -> str:
        """The base of every URL the mock writes into its answers."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

    @property
    def database_url(self) -> str:
        if self.db:
            return self.db
        if self.ephemeral:
            return "sqlite://"
        return f"sqlite:///{self.data_dir / 'mock.sqlite3'}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        """The settings :meth:`to_json` wrote: paths and tuples restored by field type."""
        values: dict[str, Any] = json.loads(text)
        for spec in fields(cls):
            value = values.get(spec.name)
            if value is None:
                continue
            if "Path" in str(spec.type):
                values[spec.name] = Path(value)
            elif "tuple" in str(spec.type):
                values[spec.name] = tuple(value)
        return cls(**values)
