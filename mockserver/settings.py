"""One frozen settings object; the CLI fills it from flags and ``ASTRIA_MOCK_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BODY_BYTES = 50 * 1024 * 1024


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

    @property
    def base_url(self) -> str:
        """The base of every URL the mock writes into its answers."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

    @property
    def database_url(self) -> str:
        if self.ephemeral:
            return "sqlite://"
        return f"sqlite:///{self.data_dir / 'mock.sqlite3'}"
