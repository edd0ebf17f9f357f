"""Chunk boundaries of a hierarchical model on a text, as a PNG (matplotlib) and an HTML view.

Like the paper's Figures 4 and 16: every stage's chunks drawn over the characters, the clean text
beside a perturbed one. Boundary positions come from LMOutput.boundaries: stage 0 flags byte
positions, stage s>0 flags positions of stage s-1's chunk sequence, mapped back to bytes here.
"""

from __future__ import annotations

import bisect
import html
import warnings
from pathlib import Path

import torch

CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "Source Han Sans SC",
             "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "AR PL UMing CN",
             "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC")
COLORS = ("#cfe3ff", "#ffe1b8")  # alternating chunk backgrounds
PALETTE = ("#1f4e9c", "#b3261e", "#2e7d32", "#6a1b9a")  # boundary marks per stage


@torch.no_grad()
def chunk_starts(model: torch.nn.Module, tokenizer, text: str) -> list[list[int]]:
    """Per stage, the byte offsets in `text` where a chunk starts (BOS excluded)."""
    data = text.encode("utf-8")
    if tokenizer.name != "bytes":
        raise ValueError(f"boundaries need a byte-level model; this one uses '{tokenizer.name}'")
    ids = torch.tensor([[tokenizer.bos_id] + list(tokenizer.encode(data))])
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    out = model(ids.to(device), doc_start=(ids == tokenizer.bos_id).to(device))
    model.train(was)
    if not out.boundaries:
        raise ValueError("this model has no chunking stages (isotropic); nothing to draw")
    positions = torch.arange(ids.shape[1])  # stage-0 positions: 0 = BOS, j = byte j-1
    stages = []
    for b in out.boundaries:
        b = b[0, : len(positions)].cpu()
        positions = positions[b]
        stages.append([int(p) - 1 for p in positions if p >= 1])
    return stages


def _char_chunks(text: str, starts: list[int]) -> list[int]:
    """Chunk index of every character: the number of chunk starts before its last byte (so a
    boundary inside a multi-byte character counts for that character; 0 = the BOS chunk)."""
    bounds = sorted(set(starts))
    out, off = [], 0
    for ch in text:
        off += len(ch.encode("utf-8"))
        out.append(bisect.bisect_left(bounds, off))
    return out


def find_cjk_font() -> str | None:
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    return next((n for n in CJK_FONTS if n in names), None)


def _visible(ch: str) -> str:
    return {"\n": "⏎", "\t": "⇥", " ": "·"}.get(ch, ch)


def render_png(panels: list[tuple[str, str, list[list[int]]]], path: str | Path,
               width: int = 40) -> dict:
    """panels: (title, text, per-stage chunk starts); drawn side by side. Returns info dict.

    One character per cell, `width` cells per row: the chunk shading of a stage is one patch
    collection and its boundary marks one line collection per axes (a few hundred separate
    artists per stage made this the slowest part of a report), and the margins are set in
    inches rather than by tight_layout, which draws the whole figure once more to measure it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.patches import Rectangle

    cjk = find_cjk_font()
    needs_cjk = any(ord(c) > 0x2E80 for _, t, _ in panels for c in t)
    family = [cjk, "DejaVu Sans Mono"] if cjk else ["DejaVu Sans Mono"]
    n_stages = max(len(s) for _, _, s in panels)
    rows = max(-(-max(len(t), 1) // width) for _, t, _ in panels)
    fig_w = 0.19 * width * len(panels) + 0.6
    row_h, title_h, pad = 0.32, 0.3, 0.15  # inches: a text row, an axes title, the edges
    note_h = 0.2 if needs_cjk and not cjk else 0.0
    fig_h = n_stages * (row_h * rows + title_h) + 2 * pad + note_h
    fig, axes = plt.subplots(n_stages, len(panels), figsize=(fig_w, fig_h), squeeze=False)
    fig.subplots_adjust(left=0.3 / fig_w, right=1 - 0.3 / fig_w, top=1 - (pad + title_h) / fig_h,
                        bottom=(pad + note_h) / fig_h, wspace=0.6 / (0.19 * width),
                        hspace=title_h / (row_h * rows))
    for col, (title, text, stages) in enumerate(panels):
        for s in range(n_stages):
            ax = axes[s][col]
            ax.set_xlim(0, width)
            ax.set_ylim(rows, 0)
            ax.axis("off")
            if s >= len(stages):
                continue
            chunks = _char_chunks(text, stages[s])
            cells, shades, marks = [], [], []
            for i, ch in enumerate(text):
                r, c = divmod(i, width)
                cells.append(Rectangle((c, r + 0.08), 1, 0.84))
                shades.append(COLORS[chunks[i] % 2])
                if i == 0 or chunks[i] != chunks[i - 1]:
                    marks.append([(c, r + 0.05), (c, r + 0.95)])
                ax.text(c + 0.5, r + 0.55, _visible(ch), ha="center", va="center", fontsize=9,
                        family=family)
            ax.add_collection(PatchCollection(cells, facecolors=shades, linewidths=0, zorder=0))
            ax.add_collection(LineCollection(marks, colors=PALETTE[s % 4], linewidths=1.6))
            n_chunks = len(set(chunks)) if text else 0
            bpc = len(text.encode("utf-8")) / max(n_chunks, 1)
            ax.set_title(f"{title} — stage {s}: {n_chunks} chunks, {bpc:.2f} bytes/chunk",
                         fontsize=9, loc="left")
    note = ""
    if needs_cjk and not cjk:
        note = "note: no CJK font installed; CJK characters are drawn as boxes (see the HTML view)"
        fig.text(0.01, 0.005, note, fontsize=8, color="#b3261e")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing-glyph warnings, one per character
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"path": str(path), "cjk_font": cjk, "note": note}


def render_html(panels: list[tuple[str, str, list[list[int]]]], path: str | Path) -> None:
    """A small self-contained HTML file: one block per panel and stage, chunks shaded."""
    from hnetbench.config import atomic_write_text

    parts = ["<!doctype html><meta charset='utf-8'><title>chunk boundaries</title>",
             "<style>body{font-family:sans-serif}.t{font-family:monospace;white-space:pre-wrap;"
             "line-height:1.9;border:1px solid #ccc;padding:6px;max-width:46em}"
             f".c0{{background:{COLORS[0]}}}.c1{{background:{COLORS[1]}}}"
             ".b{border-left:2px solid #1f4e9c}.row{display:flex;gap:1.5em}</style>",
             "<div class='row'>"]
    for title, text, stages in panels:
        parts.append(f"<div><h3>{html.escape(title)}</h3>")
        for s, starts in enumerate(stages):
            chunks = _char_chunks(text, starts)
            spans, cur = [], None
            for i, ch in enumerate(text):
                if chunks[i] != cur:
                    if cur is not None:
                        spans.append("</span>")
                    spans.append(f"<span class='c{chunks[i] % 2} b'>")
                    cur = chunks[i]
                spans.append(html.escape(ch))
            if cur is not None:
                spans.append("</span>")
            parts.append(f"<p>stage {s}: {len(set(chunks))} chunks</p>"
                         f"<div class='t'>{''.join(spans)}</div>")
        parts.append("</div>")
    parts.append("</div>")
    atomic_write_text(path, "\n".join(parts) + "\n")
