"""The hostile suite's fixtures (tests/hostile/fixtures.py) and its case count."""

from __future__ import annotations

import pytest

from tests.hostile.fixtures import items

__all__ = ["items"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.hostile.test_filter_input import CASES

    if CASES:
        counts = ", ".join(f"{backend}: {n}" for backend, n in sorted(CASES.items()))
        terminalreporter.write_line(
            f"hostile-input suite: {sum(CASES.values())} cases ({counts})")
