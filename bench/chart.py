"""docs/assets/bench-ratios.png: the latest E/D and E/B ratios of bench/README.md's table.

Run it after ``make bench`` (``.venv/bin/python bench/chart.py``); needs matplotlib (the
``docs`` extra). The chart is read from the table, so it shows exactly the published run.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "bench" / "README.md"
OUT = ROOT / "docs" / "assets" / "bench-ratios.png"


def latest_ratios() -> list[tuple[str, float, float]]:
    """(operation, E/D, E/B) of every row of the results table, in table order."""
    text = README.read_text(encoding="utf-8")
    results = text[text.index("<!-- bench:results:start -->"):
                   text.index("<!-- bench:results:end -->")]
    rows = []
    for line in results.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 9 or not re.match(r"\d", cells[7]):
            continue
        e_b, e_d = (float(cell.split()[0]) for cell in cells[7:9])
        rows.append((cells[0], e_d, e_b))
    return rows


def main() -> None:
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt

    rows = latest_ratios()
    labels = [name for name, _, _ in rows]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.4), dpi=110)
    positions = range(len(rows))
    height = 0.38
    ax.barh([p - height / 2 for p in positions], [d for _, d, _ in rows], height,
            label="E/D (plain Tortoise)", color="#2b7bba")
    ax.barh([p + height / 2 for p in positions], [b for _, _, b in rows], height,
            label="E/B (SQLAlchemy, the original's way)", color="#e58e26")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(list(positions), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("throughput ratio, aegis-tortoise (E) / other (log scale; > 1: E is faster)")
    ticks = [0.5, 1, 2, 3, 5, 10, 20, 30]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, metadata={"Software": None})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
