"""The environment, the Markdown table, the JSON dump and the README update."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.harness import A_COPY, A_EXECUTEMANY, CONSTRUCT, Results
from bench.workload import OPS, Op, Sizes

NAMES = {"A": "A asyncpg", "B": "B SQLAlchemy", "D": "D Tortoise", "E": "E aegis"}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,  # noqa: S607
                             text=True, check=False, cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or "-"
    except (OSError, subprocess.SubprocessError):
        return "-"


def environment(pg_version: str | None) -> dict[str, Any]:
    mem = "-"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu()}, {os.cpu_count()} cores, {mem} RAM, {platform.system()} "
                   f"{platform.release()}",
        "python": platform.python_version(),
        "postgresql": pg_version or "-",
        "sqlite": sqlite3.sqlite_version,
        "versions": {d: _version(d) for d in (
            "aegis-tortoise", "tortoise-orm", "asyncpg", "SQLAlchemy", "greenlet",
            "aiosqlite", "pypika-tortoise")},
        "git": _git_commit(),
        "load_at_start": [round(x, 2) for x in load],
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100_000:
        return f"{value / 1000:,.0f}k"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _ratio(value: float | None, target: float | None) -> str:
    if value is None:
        return "-"
    text = f"{value:.2f}"
    if target is None:
        return text
    return f"{text} {'ok' if value >= target else 'MISS'}"


def table(results: Results, sizes: Sizes, ops: list[Op] | None = None) -> str:
    """The Markdown table: median throughput per contender and median paired ratios."""
    lines = [
        "| operation | unit/s | A asyncpg | B SQLAlchemy | D Tortoise | E aegis "
        "| E/A | E/B (target) | E/D (target) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    offsets = sizes.offsets()
    for op in ops or OPS:
        if op.key not in results.samples:
            continue
        label = op.label.replace("N rows", f"{sizes.batch_rows:,} rows")
        if op.key in offsets:
            label += f" (offset {offsets[op.key]:,})"
        med = {k: results.median(op.key, k) for k in NAMES}
        e_a = results.ratio(op.key, "E", "A")
        e_b = results.ratio(op.key, "E", "B")
        e_d = results.ratio(op.key, "E", "D")
        lines.append(
            f"| {label} | {op.unit} | {_fmt(med['A'])} | {_fmt(med['B'])} | {_fmt(med['D'])} "
            f"| {_fmt(med['E'])} | {_ratio(e_a, op.a_target)} "
            f"| {_ratio(e_b, op.b_target)}{f' ({op.b_target})' if op.b_target else ''} "
            f"| {_ratio(e_d, op.d_target)}{f' ({op.d_target})' if op.d_target else ''} |")
    notes = []
    em = results.median("create_many", A_EXECUTEMANY)
    if em is not None:
        notes.append(f"A's create_many is `INSERT ... SELECT * FROM unnest(...) RETURNING id`; "
                     f"the same batch through asyncpg `executemany` (no ids returned) runs at "
                     f"{_fmt(em)} rows/s (E/that = "
                     f"{_ratio(results.ratio('create_many', 'E', A_EXECUTEMANY), None)}).")
    copy = results.median("create_many_dicts", A_COPY)
    if copy is not None:
        notes.append(f"The dicts batch by asyncpg binary COPY (ids taken from the sequence "
                     f"first, `copy_records_to_table`), the COPY floor, runs at {_fmt(copy)} "
                     f"rows/s (E/that = "
                     f"{_ratio(results.ratio('create_many_dicts', 'E', A_COPY), 0.8)}; "
                     f"target 0.8).")
    construct = results.median("create_many", CONSTRUCT)
    rates = [results.median("create_many", k) for k in ("A", "D")]
    if construct is not None and rates[0] and rates[1]:
        # Rates are rows/s; E cannot take less than the caller's construction plus A's insert.
        ceiling = (1 / rates[1]) / (1 / construct + 1 / rates[0])
        notes.append(f"Of the model-instances create_many, the caller's own `User(...)` for "
                     f"every row, measured alone, runs at {_fmt(construct)} rows/s: that plus "
                     f"A's insert puts the ceiling of E/D there at about {ceiling:.2f} and of "
                     f"E/A at about {construct / (construct + rates[0]):.2f} (medians, so a "
                     f"round can land above).")
    return "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "")


def header(env: dict[str, Any], sizes: Sizes, rounds: int, only: list[str] | None) -> str:
    v = env["versions"]
    scope = f"only `{','.join(only)}`" if only else "all operations"
    return (
        f"Run {env['date']} (commit {env['git']}), {rounds} rounds at scale {sizes.scale} "
        f"({scope}; seed {sizes.seed_users:,} users, 10% soft-deleted; create_many "
        f"{sizes.batch_rows:,} rows).\n"
        f"Machine: {env['machine']}; load average at start {env['load_at_start']}.\n"
        f"Python {env['python']}, PostgreSQL {env['postgresql']} (local TCP), "
        f"sqlite {env['sqlite']}; aegis-tortoise {v['aegis-tortoise']}, tortoise-orm "
        f"{v['tortoise-orm']}, asyncpg {v['asyncpg']}, SQLAlchemy {v['SQLAlchemy']}, "
        f"greenlet {v['greenlet']}, aiosqlite {v['aiosqlite']}.\n\n"
        "Cells: median throughput over the rounds. Ratios: median over the rounds of E's "
        "throughput divided by the other's, measured back to back in the same round.")


def write_readme(path: Path, body: str, section: str = "results") -> None:
    """Replace a section of ``path`` (between its markers) with ``body``.

    ``section`` is ``"results"`` (the main table) or ``"heap"`` (a run with ``--heap``).
    """
    start, end = f"<!-- bench:{section}:start -->", f"<!-- bench:{section}:end -->"
    block = f"{start}\n{body}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Benchmarks\n\n{block}\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def dump_json(path: Path, results: Results, sizes: Sizes, env: dict[str, Any],
              rounds: int) -> None:
    ratios: dict[str, dict[str, Any]] = {}
    for op, per in results.samples.items():
        ratios[op] = {}
        for other in ("A", "B", "D", A_EXECUTEMANY, A_COPY):
            if "E" in per and other in per:
                ratios[op][f"E/{other}"] = {"median": results.ratio(op, "E", other),
                                            "per_round": results.ratios(op, "E", other)}
    data = {
        "environment": env,
        "rounds": rounds,
        "sizes": {"scale": sizes.scale, "seed_users": sizes.seed_users,
                  "batch_rows": sizes.batch_rows, "units": sizes.units,
                  "offsets": sizes.offsets()},
        "samples": results.samples,
        "medians": {op: {k: results.median(op, k) for k in per}
                    for op, per in results.samples.items()},
        "ratios": ratios,
        "checks": results.checks,
        "failures": results.failures,
        "ok": not results.failures,
    }
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
