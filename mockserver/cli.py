"""``astria-mock``: serve the mock; every flag also reads an ``ASTRIA_MOCK_*`` variable."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import uvicorn
import yaml
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp
from uvicorn.supervisors import Multiprocess

import contracts.cli

from . import __version__
from .app import create_app
from .backends import BACKENDS
from .clock import parse_clock
from .contract import SPEC_RESOURCE
from .ratelimit import Rate
from .runtime import build_runtime
from .settings import DEFAULT_MAX_BODY_BYTES, SETTINGS_VARIABLE, Settings

ENV_PREFIX = "ASTRIA_MOCK_"


def _env(name: str, default: Any) -> Any:
    return os.environ.get(ENV_PREFIX + name, default)


def _flag(value: str | bool) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes", "on")


def _clock(value: str) -> str:
    try:
        parse_clock(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def _rate(value: str) -> str:
    try:
        Rate.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _serve_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="start the mock server",
        description="Start the Astria API mock. Every flag can also be set with the "
        "ASTRIA_MOCK_<FLAG> environment variable (e.g. ASTRIA_MOCK_PORT=9000).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _serve_arguments(serve)
    worker = sub.add_parser(
        "worker",
        help="render prompts and deliver callbacks for replicas sharing a database",
        description="Run no HTTP server: claim due tunes, prompts and callbacks from the "
        "database that `astria-mock serve` replicas share (--db, or the same --data-dir), "
        "render the prompts with the chosen backend and deliver the callbacks. Give it the "
        "same flags as the replicas (the URLs in callback bodies come from --public-url, "
        "or --host and --port).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _serve_arguments(worker)


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default=_env("HOST", "127.0.0.1"), help="interface to listen on")
    add("--port", type=int, default=int(_env("PORT", 8000)), help="port; 0 picks a free one")
    add(
        "--data-dir",
        type=Path,
        default=Path(_env("DATA_DIR", ".astria-mock")),
        help="where the SQLite store and image files live",
    )
    add(
        "--ephemeral",
        action="store_true",
        default=_flag(_env("EPHEMERAL", False)),
        help="keep everything in memory; nothing survives a restart",
    )
    add(
        "--clock",
        type=_clock,
        default=_env("CLOCK", "real"),
        help="'real' or 'frozen:<ISO time>' for byte-identical replays",
    )
    add(
        "--public-url",
        default=_env("PUBLIC_URL", None),
        help="base of the URLs written into answers (default: http://HOST:PORT)",
    )
    add(
        "--log-level",
        default=_env("LOG_LEVEL", "info"),
        choices=["critical", "error", "warning", "info", "debug"],
    )
    add(
        "--api-key",
        dest="api_keys",
        action="append",
        default=[k for k in _env("API_KEYS", "").split(",") if k],
        help="accept only this bearer key (repeatable); default: any well-formed key",
    )
    add(
        "--max-body-bytes",
        type=int,
        default=int(_env("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
        help="larger request bodies get a 413",
    )
    add(
        "--train-seconds",
        type=float,
        default=float(_env("TRAIN_SECONDS", 3.0)),
        help="how long non-FaceID tunes train",
    )
    add(
        "--prompt-seconds",
        type=float,
        default=float(_env("PROMPT_SECONDS", 2.0)),
        help="how long a prompt takes once its tune is trained",
    )
    add(
        "--prompt-polls",
        type=int,
        default=_env("PROMPT_POLLS", None),
        help="instead of time: a prompt is done on its Nth read",
    )
    add(
        "--callback-body",
        choices=["wrapped", "bare"],
        default=_env("CALLBACK_BODY", "wrapped"),
        help='callback body: {"tune": {...}} as the reference app reads it, or bare',
    )
    add(
        "--callback-retries",
        type=int,
        default=int(_env("CALLBACK_RETRIES", 0)),
        help="attempts after a failed delivery, with backoff (the real API makes none)",
    )
    add(
        "--callback-timeout",
        type=float,
        default=float(_env("CALLBACK_TIMEOUT", 10.0)),
        help="seconds a webhook delivery may take, connecting to the answer",
    )
    add(
        "--callback-allow",
        action="append",
        default=[h for h in _env("CALLBACK_ALLOW", "").split(",") if h],
        help="allow callbacks only to this host, *.domain or CIDR (repeatable)",
    )
    add(
        "--strict",
        action="store_true",
        default=_flag(_env("STRICT", False)),
        help="answer unknown fields with a 422 instead of ignoring them (all violations are "
        "logged at /_mock/violations either way)",
    )
    add(
        "--rate-limit",
        type=_rate,
        default=_env("RATE_LIMIT", None),
        help="per-key limit such as 10/s or 600/m; beyond it a 429 with Retry-After",
    )
    add(
        "--scenario",
        type=Path,
        default=_env("SCENARIO", None),
        help="YAML file of fault rules to start with ({faults: [...]}, see README)",
    )
    add(
        "--seed-file",
        type=Path,
        default=_env("SEED_FILE", None),
        help="YAML of tunes and prompts (with images) to start with, per API key",
    )
    add(
        "--fault-seed",
        type=int,
        default=int(_env("FAULT_SEED", 0)),
        help="seed of the generator behind probabilistic faults and latency ranges",
    )
    add(
        "--admin-token",
        default=_env("ADMIN_TOKEN", None),
        help="require this X-Admin-Token header on /_mock/ routes (shared sandboxes)",
    )
    add(
        "--idempotency",
        action="store_true",
        default=_flag(_env("IDEMPOTENCY", False)),
        help="same tune title / same prompt attributes return the existing object",
    )
    add(
        "--db",
        default=_env("DB", None),
        help="database URL shared by replicas, e.g. postgresql://user@host/astria "
        "(default: SQLite in --data-dir)",
    )
    add(
        "--workers",
        type=_positive,
        default=int(_env("WORKERS", 1)),
        help="serve with this many processes on one port, sharing the database",
    )
    add(
        "--generate",
        action=argparse.BooleanOptionalAction,
        default=_flag(_env("GENERATE", True)),
        help="render due prompts in this process; --no-generate leaves them to "
        "`astria-mock worker` processes",
    )
    add(
        "--lease-seconds",
        type=float,
        default=float(_env("LEASE_SECONDS", 10.0)),
        help="how long a process holds work it took; after that, if it died, another "
        "process takes the work over",
    )
    add(
        "--backend",
        choices=BACKENDS,
        default=_env("BACKEND", "placeholder"),
        help="what renders prompts: placeholder images, or real FaceID images with diffusers "
        "(pip install 'astria-mock[gpu]', --weights; see docs/gpu.md)",
    )
    add(
        "--weights",
        type=Path,
        default=_env("WEIGHTS", None),
        help="the diffusers backend's local weights folder (never downloads; docs/gpu.md)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astria-mock",
        description="Offline mock server and contract kit for the Astria fine-tuning API.",
    )
    parser.add_argument("--version", action="version", version=f"astria-mock {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(sub)
    _proxy_parser(sub)
    sub.add_parser("spec", help="print the path of the bundled openapi.yaml")
    contracts.cli.add_commands(sub)
    return parser


def _proxy_parser(sub: Any) -> None:
    proxy = sub.add_parser(
        "proxy",
        help="a validating reverse proxy in front of the real (or a staging) API",
        description="Forward every request to --upstream unchanged, check requests and answers "
        "against the contract, and log violations at GET /_mock/violations.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    proxy.add_argument("--upstream", required=True, help="base URL, e.g. https://api.astria.ai")
    proxy.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    proxy.add_argument("--port", type=int, default=8001, help="port; 0 picks a free one")
    proxy.add_argument("--timeout", type=float, default=60.0, help="seconds to wait upstream")
    proxy.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )


def settings_from(args: argparse.Namespace, port: int) -> Settings:
    polls = args.prompt_polls
    return Settings(
        host=args.host,
        port=port,
        data_dir=args.data_dir,
        ephemeral=args.ephemeral,
        clock=args.clock,
        public_url=args.public_url,
        log_level=args.log_level,
        api_keys=tuple(args.api_keys),
        max_body_bytes=args.max_body_bytes,
        train_seconds=args.train_seconds,
        prompt_seconds=args.prompt_seconds,
        prompt_polls=int(polls) if polls is not None else None,
        idempotency=args.idempotency,
        strict=args.strict,
        rate_limit=args.rate_limit,
        scenario=args.scenario,
        fault_seed=args.fault_seed,
        admin_token=args.admin_token,
        seed_file=args.seed_file,
        callback_body=args.callback_body,
        callback_retries=args.callback_retries,
        callback_timeout=args.callback_timeout,
        callback_allow=tuple(args.callback_allow),
        db=args.db,
        workers=args.workers,
        generate=args.generate,
        lease_seconds=args.lease_seconds,
        backend=args.backend,
        weights=Path(args.weights) if args.weights is not None else None,
    )


class _Server(uvicorn.Server):
    """Says where it listens once it accepts connections."""

    def __init__(self, config: uvicorn.Config, banner: str) -> None:
        super().__init__(config)
        self._banner = banner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        print(self._banner, flush=True)


def _bind(host: str, port: int) -> socket.socket | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        print(f"astria-mock: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return None
    return sock


def _run(app: ASGIApp, sock: socket.socket, log_level: str, banner: str) -> int:
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(app, log_level=log_level, access_log=log_level == "debug")
    _keep_started()
    _Server(config, banner).run(sockets=[sock])
    return 0


def _listening(host: str, sock: socket.socket) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{sock.getsockname()[1]}"


def _state(settings: Settings) -> str:
    if settings.db:
        return make_url(settings.db).render_as_string(hide_password=True)
    return "memory" if settings.ephemeral else str(settings.data_dir)


def serve(args: argparse.Namespace) -> int:
    sock = _bind(args.host, args.port)
    if sock is None:
        return 2
    settings = settings_from(args, sock.getsockname()[1])
    banner = f"astria-mock listening on {_listening(settings.host, sock)}"
    if settings.public_url:
        banner += f"\nanswers link to {settings.base_url}"
    banner += f"\nstate: {_state(settings)}"
    if settings.workers > 1:
        if settings.ephemeral:
            print("astria-mock: --workers needs state they can share, not --ephemeral")
            return 2
        if settings.backend != "placeholder" and settings.generate:
            print(
                f"astria-mock: --backend {settings.backend} loads its models once per process: "
                "use --workers 1, or --no-generate replicas beside one `astria-mock worker "
                f"--backend {settings.backend}`",
                file=sys.stderr,
            )
            return 2
        banner += f"\nworkers: {settings.workers} processes"
        return _run_workers(settings, sock, banner)
    try:
        app = create_app(settings)
    except (OSError, ValueError, SQLAlchemyError, yaml.YAMLError) as exc:
        print(f"astria-mock: {exc}", file=sys.stderr)
        return 2
    return _run(app, sock, settings.log_level, banner)


def app_from_environment() -> ASGIApp:
    """The app of one ``--workers`` process, from the settings its parent put in the
    environment (uvicorn starts such processes fresh, by import string)."""
    app = create_app(Settings.from_json(os.environ[SETTINGS_VARIABLE]))
    _keep_started()
    return app


def _keep_started() -> None:
    """What start-up made lives as long as the process: the cyclic collector need not look
    through it again. Its full collections under a stream of creates took 40 ms each,
    12 ms after this."""
    gc.collect()
    gc.freeze()


def _run_workers(settings: Settings, sock: socket.socket, banner: str) -> int:
    """N processes on one socket under uvicorn's supervisor, which restarts any that die."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        build_runtime(settings).store.close()  # migrate once, before the workers start
    except (OSError, ValueError, SQLAlchemyError) as exc:
        print(f"astria-mock: {exc}", file=sys.stderr)
        return 2
    os.environ[SETTINGS_VARIABLE] = settings.to_json()
    config = uvicorn.Config(
        f"{__name__}:app_from_environment",
        factory=True,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
    )
    sock.listen(config.backlog)  # connections wait in the backlog until a worker is up
    print(banner, flush=True)
    Multiprocess(config, sockets=[sock]).run()
    return 0


def worker(args: argparse.Namespace) -> int:
    settings = settings_from(args, args.port)
    if settings.ephemeral:
        print("astria-mock: a worker shares state with serve: give --db or --data-dir")
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        runtime = build_runtime(settings)
    except (OSError, ValueError, SQLAlchemyError) as exc:
        print(f"astria-mock: {exc}", file=sys.stderr)
        return 2
    print(f"astria-mock worker: taking work from {_state(settings)}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        anyio.run(runtime.run, settings.generate)
    except KeyboardInterrupt:
        pass
    finally:
        runtime.store.close()
    return 0


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def proxy(args: argparse.Namespace) -> int:
    sock = _bind(args.host, args.port)
    if sock is None:
        return 2
    from contracts.proxy import create_proxy  # httpx: imported by the command that uses it

    app = create_proxy(args.upstream, timeout=args.timeout)
    banner = f"astria-mock proxy listening on {_listening(args.host, sock)} → {args.upstream}"
    banner += "\nviolations: GET /_mock/violations"
    return _run(app, sock, args.log_level, banner)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "func", None) is not None:
        code: int = args.func(args)
        return code
    if args.command == "spec":
        print(SPEC_RESOURCE)
        return 0
    if args.command == "proxy":
        return proxy(args)
    if args.command == "worker":
        return worker(args)
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
