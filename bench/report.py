"""The results table: one line per check, as text for the terminal and as markdown."""

from __future__ import annotations

from dataclasses import dataclass

PASS, MISS, SKIP, ERROR = "PASS", "MISS", "SKIP", "ERROR"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the table: what was measured, the ratio, the target and the verdict.

    ``ratio`` is ours over the reference for comparisons (higher is better for throughput,
    lower for latency and cost), and measured over the limit for absolute targets.
    """

    row: str
    what: str
    measured: str
    ratio: str
    target: str
    result: str

    @classmethod
    def skipped(cls, row: str, what: str, target: str, reason: str) -> Check:
        return cls(row, what, reason, "-", target, SKIP)

    @classmethod
    def failed(cls, row: str, what: str, target: str, reason: str) -> Check:
        return cls(row, what, reason, "-", target, ERROR)


def verdict(ok: bool) -> str:
    return PASS if ok else MISS


HEADERS = ("what", "measured (medians)", "ratio", "target", "result")


def _cells(check: Check) -> tuple[str, ...]:
    return (check.what, check.measured, check.ratio, check.target, check.result)


def text_table(checks: list[Check]) -> str:
    rows = [HEADERS, *(_cells(c) for c in checks)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _md(cell: str) -> str:
    return cell.replace("|", "\\|")


def markdown_table(checks: list[Check]) -> str:
    lines = [
        "| " + " | ".join(HEADERS) + " |",
        "| " + " | ".join("---" for _ in HEADERS) + " |",
    ]
    lines += ["| " + " | ".join(_md(c) for c in _cells(check)) + " |" for check in checks]
    return "\n".join(lines)


def fmt_rps(value: float) -> str:
    return f"{value:,.0f} req/s"


def fmt_ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"
