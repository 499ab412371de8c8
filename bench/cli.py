"""``python -m bench``: run the rows, print the table of ratios, optionally write markdown."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import date

from .context import Context, Options
from .load import LoadError
from .report import ERROR, Check, markdown_table, text_table
from .rows import ROW_NAMES, ROWS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure astria-mock against a bare Starlette baseline and Prism, in one "
        "run (interleaved, medians), and print a table of ratios against the targets.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs (the smoke test's mode)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these rows (repeatable or comma-separated): {', '.join(ROW_NAMES)}",
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds per load run (5)")
    parser.add_argument("--repeat", type=int, default=None, help="interleaved rounds (5)")
    parser.add_argument(
        "--load",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator: wrk when installed (auto), or the Python fallback",
    )
    parser.add_argument("--no-prism", action="store_true", help="leave Prism out")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table to this file")
    return parser


def _selected(only: list[str]) -> list[str]:
    names = [name.strip() for item in only for name in item.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ROW_NAMES))
    if unknown:
        raise SystemExit(
            f"unknown row(s): {', '.join(unknown)}; choose from {', '.join(ROW_NAMES)}"
        )
    return names or list(ROW_NAMES)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(ctx: Context, options: Options) -> list[str]:
    tool = ctx.load.name
    lines = [
        f"astria-mock benchmark, {date.today().isoformat()}",
        f"machine: {os.cpu_count()} CPUs ({_cpu_model()}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}",
        f"load: {tool}, {options.connections} connections (multipart: 4), from a separate "
        "process on loopback",
    ]
    if ctx.load.note:
        lines.append(f"note: {ctx.load.note}")
    lines.append(
        f"runs: {ctx.load.effective(options.duration):g} s each, warm-up "
        f"{ctx.load.effective(options.warmup) if options.warmup else 0:g} s, {options.repeat} "
        "interleaved rounds, medians" + (" (--quick)" if options.quick else "")
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = _selected(args.only)
    quick = args.quick
    options = Options(
        quick=quick,
        duration=args.duration if args.duration is not None else (0.5 if quick else 5.0),
        repeat=args.repeat if args.repeat is not None else (1 if quick else 5),
        load=args.load,
        prism=not args.no_prism,
    )
    try:
        ctx = Context(options)
    except LoadError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    checks: list[Check] = []
    began = time.monotonic()
    try:
        lines = header(ctx, options)
        for line in lines:
            ctx.log(line)
        for row in ROWS:
            if row.name not in names:
                continue
            ctx.log(f"[{row.name}] {row.title}")
            row_began = time.monotonic()
            try:
                checks += row.run(ctx)
            except Exception as exc:
                ctx.log(traceback.format_exc())
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
                checks.append(Check.failed(row.name, row.title, "-", reason))
            ctx.log(f"  ({time.monotonic() - row_began:.1f} s)")
    finally:
        ctx.close()
    lines.append(f"total: {time.monotonic() - began:.0f} s")
    table = text_table(checks)
    print("\n".join(lines))
    print()
    print(table)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as out:
            out.write("\n\n".join(["  \n".join(lines), markdown_table(checks)]) + "\n")
    return 1 if any(check.result == ERROR for check in checks) else 0
