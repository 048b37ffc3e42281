"""The benchmark still runs: every contender, every operation, at a tiny scale (not timed).

Each run is a subprocess (``bench/run.py`` is a script with its own event loop and its own
databases); a contender whose results differ from its database makes the run exit 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import PgServer

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "bench" / "run.py"

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _run(args: list[str], *, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, str(RUN), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120,  # noqa: S603
                          cwd=ROOT, check=False)


def test_bench_smoke(pg_server: PgServer, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = _run(["--rounds", "1", "--scale", "0.01", "--no-readme",
                 "--pg-url", pg_server.admin_url, "--json", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["ok"]
    assert data["failures"] == []
    checked = {(c["contender"], c["op"]) for c in data["checks"] if c["ok"]}
    for op in ("create", "get", "list_first", "list_mid", "list_last", "count", "update",
               "concurrent", "relations", "create_many"):
        for contender in ("A", "B", "D", "E"):
            assert (contender, op) in checked
            assert data["samples"][op][contender], (op, contender)
    for op in ("sqlite_create", "sqlite_get", "sqlite_create_many"):
        for contender in ("B", "D", "E"):
            assert (contender, op) in checked
    assert "| get by primary key |" in proc.stdout
    # The caller's own User(...) construction is timed too, and bounds the instances' ratios.
    assert data["samples"]["create_many"]["User(...) only"]
    assert "ceiling of E/D" in proc.stdout


def test_bench_fails_on_a_wrong_result(pg_server: PgServer) -> None:
    # A contender that returns another row must fail the run before anything is timed.
    code = textwrap.dedent("""
        import sys
        sys.argv[0] = "bench/run.py"
        sys.path.insert(0, ".")
        from bench import c_aegis
        from bench.run import main

        original = c_aegis.AegisContender.get
        async def wrong(self, user_id):
            return await original(self, user_id + 1)
        c_aegis.AegisContender.get = wrong
        sys.exit(main(sys.argv[1:]))
    """)
    proc = _run(["--rounds", "1", "--scale", "0.01", "--no-readme", "--only", "get",
                 "--contenders", "E", "--pg-url", pg_server.admin_url], code=code)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "CHECK FAILED [postgres] E get" in proc.stderr
    assert "round 1/1" not in proc.stderr


def test_bulk_phases_smoke(pg_server: PgServer) -> None:
    proc = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(ROOT / "bench" / "bulk_phases.py"), "--runs", "2", "--rows", "200",
         "--pg-url", pg_server.admin_url],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for phase in ("check batch", "convert", "build instances", "INSERT task", "E/A"):
        assert phase in proc.stdout


def test_bench_heap_mode(pg_server: PgServer, tmp_path: Path) -> None:
    # --heap N keeps N more tracked objects alive for the run and says how many are tracked.
    out = tmp_path / "bench.json"
    proc = _run(["--rounds", "1", "--scale", "0.01", "--no-readme", "--no-warmup",
                 "--only", "relations", "--contenders", "A,E", "--heap", "200000",
                 "--pg-url", pg_server.admin_url, "--json", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("Heap: 200,000 objects"))
    tracked = int(line.rsplit("= ", 1)[1].rstrip(".").replace(",", ""))
    assert tracked >= 200_000
    assert json.loads(out.read_text())["samples"]["relations"]["E"]
