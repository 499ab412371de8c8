"""The contract kit's subcommands of ``astria-mock``: ``check-server`` and ``check-webhook``.

``add_commands(subparsers)`` registers both; each sets ``func`` to a handler that takes the
parsed arguments and returns the process's exit code. The checks (and schemathesis) are
imported only when one runs, so ``astria-mock serve`` starts as fast as before.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

SCHEMATHESIS_PHASES = ("examples", "coverage", "fuzzing", "stateful")
PHASES = (*SCHEMATHESIS_PHASES, "astria")
DEFAULT_MAX_EXAMPLES = 10
DEFAULT_LIVE_RATE = 1.0
DEFAULT_COUNT = 20
DEFAULT_TIMEOUT = 10.0

SERVER_DESCRIPTION = """\
Check that the server at URL keeps the Astria contract (the bundled openapi.yaml).

schemathesis runs its examples, coverage, fuzzing and stateful phases with positive and
negative data and every built-in check; generated requests carry real JPEGs, point their
adapter tags at a FaceID tune the kit creates and their callbacks at a receiver the kit runs
on 127.0.0.1. Then the Astria checks: tune creation answers 201; a FaceID tune is trained at
creation; prompting it directly is the documented 422; a deep offset is 400; every 429
carries Retry-After; a finished prompt's images download as images; tune and prompt
callbacks arrive with the documented bodies.

The exit code is 0 only when every check held. Failures print the request as curl.
"""

SERVER_EPILOG = """\
against astria-mock, start it with a fixed key so requests with a bad key are refused
(schemathesis checks that), and pass the same key:

  astria-mock serve --ephemeral --port 8000 --api-key sd_check &
  astria-mock check-server http://127.0.0.1:8000 --api-key sd_check

--live is the safe mode for the real API (key from ASTRIA_API_KEY): positive data only,
reads plus branch=fast tunes, prompts only on the run's own fast tunes, deletes only of the
tunes it created, at most --rate requests a second (default 1):

  ASTRIA_API_KEY=sd_... astria-mock check-server https://api.astria.ai --live

With the defaults --live sends about 1,700 requests (half an hour at 1 a second) and creates
and then deletes a few hundred fast tunes; for a quicker look:
--phases examples,fuzzing,astria --max-examples 3
"""

WEBHOOK_DESCRIPTION = """\
Check a client's webhook receiver: POST it every callback body the contract allows as
application/json, the spec's examples of {"tune": ...} and {"prompt": ...} first, then
bodies generated from TuneEnvelope and PromptEnvelope, and report each valid body it did not
answer with a 2xx (its status and the body sent). The exit code is 0 only if all were
accepted.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value:g}")
    return value


def _phases(text: str) -> tuple[str, ...]:
    phases = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [p for p in phases if p not in PHASES]
    if unknown or not phases:
        raise argparse.ArgumentTypeError(
            f"unknown phase {', '.join(unknown) or '(none)'}; pick from {','.join(PHASES)}"
        )
    return phases


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text}")
    return text


def api_key_from(given: str | None, live: bool) -> str:
    """The bearer key: ``--api-key``, else ``ASTRIA_API_KEY``; a ValueError says what to do."""
    key = given or os.environ.get("ASTRIA_API_KEY", "")
    if not key:
        if live:
            raise ValueError("--live needs the real API key in ASTRIA_API_KEY")
        raise ValueError(
            "no API key: pass --api-key KEY or set ASTRIA_API_KEY (against astria-mock, start it "
            "with --api-key KEY and pass the same key, so requests with a bad key get 401)"
        )
    return key


def add_commands(subparsers: Any) -> None:
    """Register ``check-server`` and ``check-webhook`` on the ``astria-mock`` subparsers."""
    server = subparsers.add_parser(
        "check-server",
        help="check a server (the real API, a mock, a proxy) against the contract",
        description=SERVER_DESCRIPTION,
        epilog=SERVER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = server.add_argument
    add("url", metavar="URL", type=_url, help="base URL of the API, e.g. http://127.0.0.1:8000")
    add("--api-key", help="bearer key (default: $ASTRIA_API_KEY)")
    add("--seed", type=int, help="seed of the data generation; printed at the start for replays")
    add(
        "--max-examples",
        type=_positive_int,
        default=DEFAULT_MAX_EXAMPLES,
        help="generated cases per operation and phase (default: %(default)s)",
    )
    add(
        "--phases",
        type=_phases,
        default=PHASES,
        help="comma-separated phases to run (default: all of "
        f"{','.join(PHASES)}; 'astria' is the kit's own checks)",
    )
    add("--junit-xml", type=Path, metavar="PATH", help="also write the results as JUnit XML")
    add("--live", action="store_true", help="safe mode for the real API (see below)")
    add(
        "--rate",
        type=float,
        metavar="PER_SECOND",
        help="at most this many requests a second "
        f"(default: {DEFAULT_LIVE_RATE:g} with --live, else no limit)",
    )
    add(
        "--prompt-timeout",
        type=_seconds,
        default=180.0,
        metavar="SECONDS",
        help="how long to poll a prompt for its images (default: %(default)g)",
    )
    add(
        "--callback-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for a callback (default: %(default)g)",
    )
    add(
        "--callback-base",
        type=_url,
        metavar="URL",
        help="the URL the server reaches the kit's receiver at, when not its own "
        "http://127.0.0.1:PORT (a tunnel, Docker's host.docker.internal)",
    )
    add(
        "--request-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="per request (default: %(default)g)",
    )
    server.set_defaults(func=run_check_server)

    webhook = subparsers.add_parser(
        "check-webhook",
        help="check a webhook receiver takes every valid callback body",
        description=WEBHOOK_DESCRIPTION,
        epilog="example:\n"
        "  astria-mock check-webhook http://127.0.0.1:3000/webhooks/astria --count 50",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = webhook.add_argument
    add("url", metavar="URL", type=_url, help="the receiver's URL, query string included")
    add(
        "--count",
        type=_positive_int,
        default=DEFAULT_COUNT,
        help="generated bodies per entity, tune and prompt (default: %(default)s)",
    )
    add("--seed", type=int, help="seed of the generation; printed at the start for replays")
    add(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="per request (default: %(default)g)",
    )
    webhook.set_defaults(func=run_check_webhook)


def run_check_server(args: argparse.Namespace) -> int:
    try:
        key = api_key_from(args.api_key, args.live)
    except ValueError as exc:
        print(f"astria-mock check-server: {exc}", file=sys.stderr)
        return 2
    rate = args.rate
    if rate is None and args.live:
        rate = DEFAULT_LIVE_RATE
    try:
        from . import server_check
    except ImportError as exc:
        return _missing(exc)

    options = server_check.Options(
        url=args.url,
        api_key=key,
        seed=args.seed if args.seed is not None else random.randrange(2**32),
        max_examples=args.max_examples,
        phases=args.phases,
        live=args.live,
        rate=rate,
        junit_xml=args.junit_xml,
        prompt_timeout=args.prompt_timeout,
        callback_timeout=args.callback_timeout,
        callback_base=args.callback_base,
        request_timeout=args.request_timeout,
    )
    report = server_check.check_server(options)
    return 0 if report.ok else 1


def run_check_webhook(args: argparse.Namespace) -> int:
    try:
        from . import webhook_check
    except ImportError as exc:
        return _missing(exc)

    return webhook_check.check_webhook(
        args.url, count=args.count, seed=args.seed, timeout=args.timeout
    )


def _missing(exc: ImportError) -> int:
    print(
        f"astria-mock: the contract kit needs {exc.name or 'schemathesis'}: "
        "pip install 'astria-mock[test]'",
        file=sys.stderr,
    )
    return 2
