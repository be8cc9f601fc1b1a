"""PNG plots of a run's metrics.jsonl: the pictures a person looks at after training."""

from __future__ import annotations

from pathlib import Path

from thinkrl.train.tracking import read_metrics

DEFAULT_PANELS = (
    ("accuracy", "accuracy"),
    ("reward/mean", "reward"),
    ("completion/length_mean", "response length (tokens)"),
    ("kl", "KL to reference"),
    ("format_rate", "format rate"),
    ("entropy", "entropy"),
    ("entropy_coef", "entropy coefficient"),
    ("zero_variance_share", "groups with no reward variance"),
    ("curriculum/drawn_extreme_share", "drawn prompts last always/never solved"),
)

SFT_PANELS = (
    ("loss", "train loss (per response token)"),
    ("eval_loss", "eval loss (per response token)"),
    ("lr", "learning rate"),
    ("grad_norm", "gradient norm"),
    ("tokens_per_s", "tokens / s"),
)


def plot_metrics(metrics_path: str | Path, out_dir: str | Path, panels=DEFAULT_PANELS) -> list[Path]:
    """One PNG per metric present in the file, plus an overview grid; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    present = [(key, title) for key, title in panels if any(r.get(key) is not None for r in rows)]
    written = []
    for key, title in present:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        _draw(ax, rows, key, title)
        fig.tight_layout()
        path = out_dir / f"{key.replace('/', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    if present:
        cols = 3
        nrows = (len(present) + cols - 1) // cols
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3 * nrows), squeeze=False)
        for ax, (key, title) in zip(axes.flat, present):
            _draw(ax, rows, key, title)
        for ax in list(axes.flat)[len(present):]:
            ax.axis("off")
        fig.tight_layout()
        path = out_dir / "overview.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _draw(ax, rows: list[dict], key: str, title: str) -> None:
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    ax.plot([s for s, _ in points], [v for _, v in points], marker="." if len(points) < 80 else None)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
