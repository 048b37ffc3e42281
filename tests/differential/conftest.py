"""Reports how many generated cases the differential suite ran, per backend."""

from __future__ import annotations

import pytest

from tests.differential.harness import CASES, PROFILE


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CASES:
        counts = ", ".join(f"{backend}: {n}" for backend, n in sorted(CASES.items()))
        terminalreporter.write_line(
            f"differential suite ({PROFILE} profile): {sum(CASES.values())} cases ({counts})")
