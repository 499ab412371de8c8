"""The benchmark harness runs end to end in its quick mode (never a timing assertion).

wrk and Prism are optional: without wrk the harness falls back to its Python load
generator and says so; without Prism the Prism comparisons are skipped with a reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = {"PASS", "MISS", "SKIP"}


@pytest.fixture
def bench_main(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(ROOT))  # bench/ is a folder of the repo, not installed
    from bench.cli import main

    return main


def test_quick_run_prints_and_writes_the_table(bench_main, tmp_path, capsys):
    if shutil.which("wrk") is None:
        print("wrk not installed: the HTTP rows use bench/pyload.py")
    markdown = tmp_path / "results.md"
    code = bench_main(["--quick", "--markdown", str(markdown)])
    out = capsys.readouterr().out
    assert code == 0, out
    table = markdown.read_text()
    for what in (
        "GET /tunes/{id} vs bare Starlette",
        "GET /tunes/{id} vs Prism",
        "POST /tunes/{id}/prompts (JSON) vs bare Starlette",
        "POST /tunes multipart",
        "prompt done -> callback received",
        "placeholder 512x512 JPEG",
        "start to ready",
        "RSS after",
        "100k vs 100 tunes",
    ):
        assert what in table
        assert what in out
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    results = [line.rstrip(" |").rsplit("| ", 1)[1] for line in rows[1:]]
    assert results
    assert set(results) <= RESULTS, table
    for line in rows:
        if line.rstrip(" |").endswith("SKIP"):
            print("skipped:", line)


def test_only_picks_rows(bench_main, capsys):
    assert bench_main(["--quick", "--only", "image"]) == 0
    out = capsys.readouterr().out
    assert "placeholder 512x512 JPEG" in out
    assert "start to ready" not in out


def test_unknown_row_is_refused(bench_main):
    with pytest.raises(SystemExit, match="unknown row"):
        bench_main(["--only", "nope"])
