"""The race's table and chart for the docs, from benchmarks/results/peers.json (no training here).

  python -m benchmarks.peers_report        # writes docs/img/peers.png and the table between the markers in
                                           # docs/peers.md
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "peers.json"
PAGE = ROOT / "docs" / "peers.md"
CHART = ROOT / "docs" / "img" / "peers.png"
BEGIN, END = "<!-- peers table: begin -->", "<!-- peers table: end -->"


def _seconds(value) -> str:
    return "—" if value is None else f"{value:.0f} s"


def _megabytes(value) -> str:
    return "—" if value is None else f"{value:,} MB"


def table(result: dict) -> str:
    lines = ["| row | tool | time to 90% | to 92% | to 93% | to 94% | best test accuracy | epochs | "
             "peak memory (largest process) | ended |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        best = row.get("best_test_accuracy")
        to = row["seconds_to"]
        ended = row["status"] + (f": {row['reason']}" if row.get("reason") else "")
        lines.append(f"| {row['row']} | {row['tool']} | {_seconds(to['90%'])} | {_seconds(to['92%'])} | "
                     f"{_seconds(to['93%'])} | {_seconds(to['94%'])} | "
                     f"{'—' if best is None else f'{100 * best:.2f}%'} | {row['epochs']} | "
                     f"{_megabytes(row.get('peak_rss_mb'))} | {ended.replace('|', '/')} |")
    epoch = result.get("whole_process_epoch")
    if epoch:
        best = epoch["best"]
        lines += ["", f"Whole-process epoch of simple-2conv at batch 256 (best of {len(epoch['walls']['cnnarena'])}):"
                  f" cnnarena {best['cnnarena']:.1f} s, the plain script {best['plain PyTorch']:.1f} s: "
                  f"**{epoch['ratio']:.2f}×**."]
    lines += ["", f"Measured on {result['date']}, {result['machine']}; each row capped at "
              f"{result['cap_seconds']:.0f} s of training."]
    return "\n".join(lines)


def chart(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    for row in result["rows"]:
        if row["curve"]:
            ax.plot([p["seconds"] for p in row["curve"]], [100 * p["test_accuracy"] for p in row["curve"]],
                    marker="o", markersize=3, label=row["row"])
    for target in (92, 93):
        ax.axhline(target, color="grey", linewidth=0.6, linestyle=":")
    ax.set_ylim(80, 95)
    ax.set_xlabel("seconds since the process started (test scoring excluded)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Fashion-MNIST, time to accuracy on this CPU")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    result = json.loads(RESULTS.read_text())
    chart(result, CHART)
    page = PAGE.read_text()
    head, _, rest = page.partition(BEGIN)
    _, _, tail = rest.partition(END)
    PAGE.write_text(f"{head}{BEGIN}\n{table(result)}\n{END}{tail}")
    print(f"wrote {CHART} and the table in {PAGE}")


if __name__ == "__main__":
    main()
