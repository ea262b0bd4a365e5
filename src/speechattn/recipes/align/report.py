"""The alignment report: ``report.html`` with PNG figures beside it (matplotlib, headless)."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechattn._io import atomic_write, write_text_atomic
from speechattn.recipes.align.data import FeatureConfig
from speechattn.recipes.align.evaluate import AlignmentResult, Metrics

__all__ = ["METRIC_COLUMNS", "WORD_COLUMNS", "write_report"]

METRIC_COLUMNS = (
    ("phone_within_20ms", "phone bnd ≤20 ms (%)", "{:.1f}"),
    ("phone_within_40ms", "phone bnd ≤40 ms (%)", "{:.1f}"),
    ("phone_mean_abs_ms", "mean |err| (ms)", "{:.1f}"),
    ("phone_mean_signed_ms", "mean signed err (ms)", "{:+.1f}"),
    ("word_within_40ms", "word bnd ≤40 ms (%)", "{:.1f}"),
    ("focus_rate", "focus rate", "{:.3f}"),
    ("failures", "failures", "{}"),
    ("utterances", "utts", "{}"),
)

#: Columns of the word-boundary table (each word's start and end; pauses not scored).
WORD_COLUMNS = (
    ("word_mean_abs_ms", "word mean |err| (ms)", "{:.1f}"),
    ("word_within_20ms", "word bnd ≤20 ms (%)", "{:.1f}"),
    ("word_within_40ms", "word bnd ≤40 ms (%)", "{:.1f}"),
    ("failures", "failures", "{}"),
    ("utterances", "utts", "{}"),
)


def _fmt(v: Any, f: str) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    return f.format(v)


def metrics_table_html(
    table: Mapping[str, Mapping[str, Metrics]],
    columns: Sequence[tuple[str, str, str]] = METRIC_COLUMNS,
) -> str:
    """``table[split][aligner] -> Metrics`` as an HTML table (``columns``: key, header, format)."""
    rows = []
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in columns)
    for split, by in table.items():
        for name, m in by.items():
            d = m.as_dict()
            cells = "".join(f"<td>{_fmt(d.get(k), f)}</td>" for k, _, f in columns)
            rows.append(
                f"<tr><td>{html.escape(split)}</td><td>{html.escape(name)}</td>{cells}</tr>"
            )
    return (
        '<table class="metrics"><thead><tr><th>split</th><th>aligner</th>'
        + head
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def metrics_table_text(
    table: Mapping[str, Mapping[str, Metrics]],
    columns: Sequence[tuple[str, str, str]] = METRIC_COLUMNS,
) -> str:
    """Plain-text (markdown) version of the metrics table."""
    cols = ["split", "aligner"] + [h for _, h, _ in columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for split, by in table.items():
        for name, m in by.items():
            d = m.as_dict()
            vals = [split, name] + [_fmt(d.get(k), f) for k, _, f in columns]
            lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _gt_frames(res: AlignmentResult, cfg: FeatureConfig) -> list[tuple[float, float]] | None:
    gt = res.item.gt_phones
    if gt is None:
        return None
    return [(float(iv[0]) / cfg.frame_s, float(iv[1]) / cfg.frame_s) for iv in gt]


def _plot_alignments(
    path: Path, examples: Mapping[str, AlignmentResult], cfg: FeatureConfig
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(examples)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    for ax, (name, res) in zip(axes[0], examples.items()):
        u = len(res.durations)
        t = int(np.sum(res.durations))
        if res.soft is not None:
            ax.imshow(
                res.soft, aspect="auto", origin="lower", cmap="magma", interpolation="nearest"
            )
        else:
            ax.set_xlim(0, t)
            ax.set_ylim(-0.5, u - 0.5)
        edges = np.concatenate([[0], np.cumsum(res.durations)])
        ax.step(edges[1:], np.arange(u), where="pre", color="cyan", lw=1.2, label="predicted path")
        gt = _gt_frames(res, cfg)
        if gt is not None:
            k = res.item.phone_token_index
            ax.plot([g[0] for g in gt], k, "w|", ms=6, label="ground-truth starts")
            ax.plot([g[1] for g in gt], k, "g|", ms=6)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("frame")
        ax.set_ylabel("token")
    axes[0][0].legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _plot_durations(path: Path, res: AlignmentResult, cfg: FeatureConfig, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mel = res.item.mel.numpy().T
    fig, ax = plt.subplots(figsize=(12, 3.4))
    ax.imshow(mel, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
    for a, b, p in res.phones:
        ax.axvline(a / cfg.frame_s, color="w", lw=0.8)
        ax.text((a + b) / 2 / cfg.frame_s, mel.shape[0] - 6, p, color="w", ha="center", fontsize=7)
    gt = _gt_frames(res, cfg)
    if gt is not None:
        for a, _ in gt:
            ax.axvline(a, color="r", lw=0.8, ls="--")
    for a, _b, w in res.words:
        ax.text(a / cfg.frame_s, 3, w, color="yellow", fontsize=8)
    ax.set_title(title + " (white: predicted phone starts, red dashed: ground truth)", fontsize=9)
    ax.set_xlabel("frame")
    ax.set_ylabel("mel bin")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _plot_curves(path: Path, histories: Mapping[str, Sequence[Mapping[str, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for name, hist in histories.items():
        if not hist:
            continue
        steps = [h["step"] for h in hist]
        loss = np.array([h["loss"] for h in hist])
        k = max(1, len(loss) // 50)
        sm = np.convolve(loss, np.ones(k) / k, mode="valid")
        axes[0].plot(steps[k - 1 :], sm, label=name)
        ev = [(h["step"], h["dev_within_20ms"]) for h in hist if "dev_within_20ms" in h]
        if ev:
            axes[1].plot(*zip(*ev), marker="o", label=name)
    axes[0].set_title("training loss (each aligner's own objective)", fontsize=9)
    axes[0].set_xlabel("step")
    axes[1].set_title("dev: phone boundaries within 20 ms (%)", fontsize=9)
    axes[1].set_xlabel("step")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def write_report(
    out_dir: Path,
    *,
    table: Mapping[str, Mapping[str, Metrics]],
    examples: Mapping[str, AlignmentResult],
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    config: FeatureConfig,
    summary: Mapping[str, Any],
    notes: Sequence[str] = (),
    word_table: Mapping[str, Mapping[str, Metrics]] | None = None,
    word_notes: Sequence[str] = (),
) -> Path:
    """Write ``report.html``, ``metrics.json`` and the PNG figures into ``out_dir``.

    ``word_table`` (optional): a second table of word boundaries (:data:`WORD_COLUMNS`, e.g.
    with a peer aligner's row), saved under ``word_boundaries`` in ``metrics.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    figs: list[tuple[str, str]] = []
    if examples:
        _plot_alignments(out_dir / "alignments.png", examples, config)
        figs.append(
            (
                "alignments.png",
                "Soft alignments of one held-out-voice utterance, hard path, ground truth",
            )
        )
        first_name = next(iter(examples))
        _plot_durations(out_dir / "durations.png", examples[first_name], config, first_name)
        figs.append(
            ("durations.png", f"Durations over the spectrogram ({html.escape(first_name)})")
        )
    if histories:
        _plot_curves(out_dir / "curves.png", histories)
        figs.append(("curves.png", "Training curves"))
    write_text_atomic(
        out_dir / "metrics.json",
        json.dumps(
            {
                "summary": dict(summary),
                "metrics": {s: {n: m.as_dict() for n, m in by.items()} for s, by in table.items()},
                **(
                    {
                        "word_boundaries": {
                            s: {n: m.as_dict() for n, m in by.items()}
                            for s, by in word_table.items()
                        }
                    }
                    if word_table is not None
                    else {}
                ),
            },
            indent=1,
        ),
    )
    summ = "".join(
        f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in summary.items()
    )
    note_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>speechattn alignment report</title>',
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;}"
        "table.metrics{border-collapse:collapse;font-size:13px}"
        "table.metrics td,table.metrics th{border:1px solid #bbb;padding:3px 6px;text-align:right}"
        "img{max-width:100%;border:1px solid #ddd}</style></head><body>",
        "<h1>Unsupervised text-to-speech alignment</h1>",
        f"<ul>{summ}</ul>",
        "<h2>Boundary accuracy against ground truth</h2>",
        metrics_table_html(table),
        note_html,
    ]
    if word_table is not None:
        body += [
            "<h2>Word boundaries (each word's start and end; pauses not scored)</h2>",
            metrics_table_html(word_table, WORD_COLUMNS),
            "".join(f"<p>{html.escape(n)}</p>" for n in word_notes),
        ]
    for src, cap in figs:
        body.append(
            f'<figure><img src="{src}" alt="{html.escape(cap)}"><figcaption>{cap}</figcaption></figure>'
        )
    body.append("</body></html>")
    path = out_dir / "report.html"
    return write_text_atomic(path, "\n".join(body))
