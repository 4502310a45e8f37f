"""A short run of the fuzz harness (``bench/fuzz_server.py``) against a real ``autosync serve``."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests" / "interop"))

import fuzz_server  # noqa: E402


async def test_a_short_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    """600 mutated frames and changes: no traceback, no death, canary and target intact."""
    report = await fuzz_server.run(600, seed=12345, data_dir=tmp_path / "data")
    assert not report.escaped, report.escaped[:5]
    assert not report.server_died
    assert report.canary_ok and report.target_loads and report.after_restart_ok
    assert report.outcomes.get("accepted", 0) and report.valid_edits >= 3
    assert sum(report.outcomes.values()) == 600
    refused = sum(n for outcome, n in report.outcomes.items() if outcome.startswith("closed"))
    assert refused > 300  # most mutations are refused, not silently taken
