"""Reports how many steps the stateful test ran, per backend."""

from __future__ import annotations

import pytest

from tests.stateful.test_session_machine import RULES, STEPS_RUN


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if STEPS_RUN:
        counts = ", ".join(f"{backend}: {n}" for backend, n in sorted(STEPS_RUN.items()))
        terminalreporter.write_line(f"stateful session test: steps run ({counts}); by rule: "
                                    + ", ".join(f"{k} {v}" for k, v in sorted(RULES.items())))
