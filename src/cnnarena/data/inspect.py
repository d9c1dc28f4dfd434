"""Exploring a dataset before training: class balance, image sizes, unreadable files, sample images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..figure_text import literal
from .dataset import Source

SAMPLES_PER_CLASS = 8


def describe(source: Source) -> dict:
    """Counts per class (pool, test, total), imbalance, original and stored sizes, skipped files (JSON-ready)."""
    pool = source.pool.class_counts()
    test = source.test.class_counts() if source.test is not None else None
    total = [p + t for p, t in zip(pool, test or [0] * len(pool), strict=True)]
    return {
        "name": source.name,
        "classes": list(source.classes),
        "counts": {"pool": pool, "test": test, "total": total},
        "samples": sum(total),
        "imbalance_ratio": max(total) / min(total) if min(total) > 0 else float("inf"),
        "original_sizes": _size_stats(source.original_sizes),
        "channels": source.pool.channels,
        "stored_size": list(source.pool.size),
        "skipped": [{"path": path, "reason": reason} for path, reason in source.skipped],
    }


def _size_stats(sizes: list[tuple[int, int]] | None) -> dict | None:
    if not sizes:
        return None
    hw = np.asarray(sizes, dtype=np.int64)
    height, width = hw[:, 0], hw[:, 1]
    return {
        "min_width": int(width.min()), "max_width": int(width.max()), "mean_width": float(width.mean()),
        "min_height": int(height.min()), "max_height": int(height.max()), "mean_height": float(height.mean()),
        "all_same": bool((hw == hw[0]).all()),
    }


def format_description(desc: dict) -> str:
    """A plain-text table (class, counts, share %) and the size and skipped-file lines."""
    counts, classes = desc["counts"], desc["classes"]
    has_test = counts["test"] is not None
    width = max(len("class"), *(len(c) for c in classes))
    header = f"{'class':<{width}}  {'pool':>7}" + (f"  {'test':>7}  {'total':>7}" if has_test else "") + "   share"
    lines = [f"{desc['name']}: {desc['samples']} images, {len(classes)} classes, "
             f"stored as {desc['channels']}×{desc['stored_size'][0]}×{desc['stored_size'][1]}", "", header,
             "-" * len(header)]
    for i, name in enumerate(classes):
        row = f"{name:<{width}}  {counts['pool'][i]:>7}"
        if has_test:
            row += f"  {counts['test'][i]:>7}  {counts['total'][i]:>7}"
        lines.append(row + f"  {100 * counts['total'][i] / max(desc['samples'], 1):5.1f}%")
    lines += ["", f"imbalance ratio: {desc['imbalance_ratio']:.2f} (largest class / smallest class)"]
    sizes = desc["original_sizes"]
    if sizes is not None:
        if sizes["all_same"]:
            lines.append(f"original size: all {sizes['min_width']}×{sizes['min_height']} (width×height)")
        else:
            for axis in ("width", "height"):
                lines.append(f"original {axis}: min {sizes['min_' + axis]}, max {sizes['max_' + axis]}, "
                             f"mean {sizes['mean_' + axis]:.1f}")
    if desc["skipped"]:
        lines.append(f"skipped {len(desc['skipped'])} unreadable files:")
        lines += [f"  {s['path']} ({s['reason']})" for s in desc["skipped"]]
    return "\n".join(lines)


def write_plots(source: Source, out_dir: Path) -> list[Path]:
    """class_distribution.png (bar chart) and samples.png (a row of sample images per class)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_distribution_plot(source, out_dir / "class_distribution.png"),
            _samples_plot(source, out_dir / "samples.png")]


def _distribution_plot(source: Source, path: Path) -> Path:
    from matplotlib.figure import Figure  # a bare Figure: no pyplot state, no GUI backend

    desc = describe(source)
    counts, classes = desc["counts"], desc["classes"]
    x = np.arange(len(classes))
    fig = Figure(figsize=(max(6.0, 0.6 * len(classes) + 2), 4.5), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(x, counts["pool"], label="pool")
    if counts["test"] is not None:
        bars = ax.bar(x, counts["test"], bottom=counts["pool"], label="official test")
        ax.legend(loc="upper left", bbox_to_anchor=(1, 1))  # outside: never hides a bar
    ax.bar_label(bars, labels=[str(t) for t in counts["total"]], fontsize=8)
    many = len(classes) > 5
    ax.set_xticks(x, [literal(c) for c in classes], rotation=45 if many else 0, ha="right" if many else "center")
    ax.set_ylabel("images")
    ax.set_title(literal(f"{source.name}: images per class (imbalance ratio {desc['imbalance_ratio']:.2f})"))
    fig.savefig(path, dpi=100)
    return path


def _samples_plot(source: Source, path: Path) -> Path:
    from matplotlib.figure import Figure

    pool, classes = source.pool, source.classes
    labels = pool.labels.numpy()
    rng = np.random.default_rng(0)  # seeded: the same samples every time
    fig = Figure(figsize=(1.2 * SAMPLES_PER_CLASS + 1.5, 1.2 * len(classes)), layout="constrained")
    axes = fig.subplots(len(classes), SAMPLES_PER_CLASS, squeeze=False)
    for row, name in enumerate(classes):
        members = np.flatnonzero(labels == row)
        chosen = np.sort(rng.choice(members, min(len(members), SAMPLES_PER_CLASS), replace=False))
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            if col < len(chosen):
                image = pool.images[int(chosen[col])].permute(1, 2, 0).numpy()
                ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=255)
        axes[row][0].set_ylabel(literal(name), rotation=0, ha="right", va="center")
    fig.savefig(path, dpi=100)
    return path
