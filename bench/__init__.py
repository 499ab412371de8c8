"""Benchmarks of astria-mock, run by hand or in CI, never as pass/fail timing tests.

``python -m bench`` measures the mock, a bare Starlette baseline serving the same bytes and
Prism on the same ``openapi.yaml``, in one run (interleaved rounds, medians), and prints a
table of ratios against the project's targets. See ``bench/README.md``.

Errors:

* ServerError — a server under test did not start, or answered a probe with an error.
* LoadError — the load generator (wrk or ``bench/pyload.py``) failed or printed no summary.
"""

from .cli import main
from .load import LoadError
from .servers import ServerError

__all__ = ["LoadError", "ServerError", "main"]
