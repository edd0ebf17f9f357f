"""Report figures (seaborn on the Agg backend). Every function returns the Figure (or None when
the runs hold no data for it); `save_all` writes each as PNG and PDF.

One fixed colour per model family (`FAMILY_COLORS`) across every figure; axes carry units.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from hnetbench.config import atomic_path  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

if TYPE_CHECKING:
    from hnetbench.reports.runs import Run

FAMILY_COLORS: dict[str, str] = {
    "transformer-bpe": "#1f77b4",
    "llamabyte": "#8c564b",
    "llamabyte-global": "#c49c94",
    "mambabyte": "#7f7f7f",
    "spacebyte": "#bcbd22",
    "spacebyte++": "#17becf",
    "hnet-pool": "#9467bd",
    "hnet-space": "#2ca02c",
    "hnet-1stage": "#ff7f0e",
    "hnet-2stage": "#d62728",
    "transformer-dna": "#aec7e8",
    "mamba-dna": "#c7c7c7",
    "hnet-dna": "#ffbb78",
    "hnet-dna-mamba": "#ff9896",
}
_EXTRA = ["#e377c2", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#31a354"]
STAGE_STYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P"]
BYTES_LABEL = "training data (bytes)"
FLOPS_LABEL = "training compute (FLOPs)"
BPB_LABEL = "validation BPB (bits/byte)"



def _readable_log_ticks(axis) -> None:  # noqa: ANN001 - a matplotlib Axis
    """Log axes spanning under a decade get crowded minor labels: label 1-2-5 steps in SI form."""
    import matplotlib.ticker as mticker

    axis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(mticker.EngFormatter(sep=""))
    axis.set_minor_formatter(mticker.NullFormatter())

def family_color(family: str) -> str:
    """The family's fixed colour; unknown families get a stable colour from their name's hash."""
    return FAMILY_COLORS.get(family) or _EXTRA[zlib.crc32(family.encode()) % len(_EXTRA)]


def _theme() -> None:
    sns.set_theme(context="paper", style="whitegrid")


def _domains(runs: list[Run]) -> list[str]:
    from hnetbench.reports.runs import DOMAIN_ORDER

    doms = {r.domain for r in runs}
    return sorted(doms, key=lambda d: (DOMAIN_ORDER.index(d) if d in DOMAIN_ORDER else 99, d))


def _panels(n: int, title: str) -> tuple[Figure, list]:
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 1.5, 3.6), squeeze=False)
    fig.suptitle(title)
    return fig, list(axes[0])


def _legend(fig: Figure, axes: list) -> None:
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if labels:
        fig.legend(
            [handles[x] for x in labels],
            labels,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            fontsize="small",
            frameon=False,
        )
    fig.tight_layout()


def bpb_vs_bytes(runs: list[Run]) -> Figure | None:
    """Validation BPB against training bytes, one panel per domain, one line per run."""
    runs = [r for r in runs if r.val_points()]
    if not runs:
        return None
    _theme()
    doms = _domains(runs)
    fig, axes = _panels(len(doms), "Validation BPB vs training data")
    for ax, dom in zip(axes, doms):
        count: dict[str, int] = {}
        for r in (r for r in runs if r.domain == dom):
            pts = r.val_points()
            k = count[r.family] = count.get(r.family, -1) + 1  # same family: vary the marker
            sns.lineplot(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                ax=ax,
                label=r.label,
                color=family_color(r.family),
                marker=MARKERS[k % len(MARKERS)],
                markersize=4,
                estimator=None,
                sort=False,
            )
        ax.set_xscale("log")
        _readable_log_ticks(ax.xaxis)
        ax.set(title=f"domain: {dom}", xlabel=BYTES_LABEL, ylabel=BPB_LABEL)
    _legend(fig, axes)
    return fig


@dataclass
class Fit:
    """BPB = a * C ** b, fitted by least squares on (log10 C, log10 BPB)."""

    domain: str
    family: str
    a: float
    b: float
    r2: float
    n: int
    c_min: float
    c_max: float

    def __call__(self, c: np.ndarray) -> np.ndarray:
        return self.a * np.power(c, self.b)


def final_points(runs: list[Run]) -> list[tuple[Run, float, float]]:
    """(run, training FLOPs, final BPB) of every finished run that has both (a failed or
    running run's FLOPs are not its budget)."""
    out = []
    for r in runs:
        if r.state not in ("completed", "unknown"):
            continue
        bpb, _ = r.bpb()
        c = r.train_flops
        if bpb is not None and c is not None and c > 0 and bpb > 0:
            out.append((r, c, bpb))
    return out


def scaling_fits(runs: list[Run]) -> list[Fit]:
    """One power law per (domain, family) with runs at >= 2 distinct FLOP budgets."""
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r, c, bpb in final_points(runs):
        groups.setdefault((r.domain, r.family), []).append((c, bpb))
    fits = []
    for (dom, fam), pts in sorted(groups.items()):
        cs = [c for c, _ in pts]
        if max(cs) < 1.05 * min(cs):  # one budget (a BPE run's FLOPs vary by a few tokens)
            continue
        x = np.log10([c for c, _ in pts])
        y = np.log10([b for _, b in pts])
        b, log_a = np.polyfit(x, y, 1)
        resid = y - (log_a + b * x)
        ss = float(((y - y.mean()) ** 2).sum())
        r2 = 1.0 - float((resid**2).sum()) / ss if ss > 0 else 1.0
        fits.append(
            Fit(
                dom,
                fam,
                float(10**log_a),
                float(b),
                r2,
                len(pts),
                float(10 ** x.min()),
                float(10 ** x.max()),
            )
        )
    return fits


def bpb_vs_flops(runs: list[Run]) -> Figure | None:
    """Final BPB vs training FLOPs (log-log), one point per run, a power law per family."""
    pts = final_points(runs)
    if not pts:
        return None
    _theme()
    doms = _domains([r for r, _, _ in pts])
    fits = scaling_fits(runs)
    fig, axes = _panels(len(doms), "Final BPB vs training compute")
    for ax, dom in zip(axes, doms):
        fams = sorted({r.family for r, _, _ in pts if r.domain == dom})
        for fam in fams:
            mine = [(c, b) for r, c, b in pts if r.domain == dom and r.family == fam]
            sns.scatterplot(
                x=[c for c, _ in mine],
                y=[b for _, b in mine],
                ax=ax,
                label=fam,
                color=family_color(fam),
                s=30,
            )
        for f in (f for f in fits if f.domain == dom):
            xs = np.geomspace(f.c_min, f.c_max, 50)
            ax.plot(
                xs,
                f(xs),
                color=family_color(f.family),
                linestyle="--",
                linewidth=1,
                label=f"{f.family} fit: {f.a:.3g}·C^{f.b:.3f}",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        _readable_log_ticks(ax.xaxis)
        _readable_log_ticks(ax.yaxis)
        ax.set(title=f"domain: {dom}", xlabel=FLOPS_LABEL, ylabel=BPB_LABEL)
    _legend(fig, axes)
    return fig


def _chunk_series(r: Run) -> dict[int, tuple[list[float], list[float]]]:
    series: dict[int, tuple[list[float], list[float]]] = {}
    for m in r.train_lines():
        for k, v in m.items():
            hit = re.fullmatch(r"stage(\d+)/bytes_per_chunk", k)
            if (
                hit
                and isinstance(v, (int, float))
                and isinstance(m.get("bytes_seen"), (int, float))
            ):
                xs, ys = series.setdefault(int(hit.group(1)), ([], []))
                xs.append(float(m["bytes_seen"]))
                ys.append(float(v))
    return series


def bytes_per_chunk(runs: list[Run]) -> Figure | None:
    """Bytes per chunk of every stage over training; colour = family, line style = stage."""
    data = [(r, _chunk_series(r)) for r in runs]
    data = [(r, s) for r, s in data if s]
    if not data:
        return None
    _theme()
    fig, axes = _panels(1, "Bytes per chunk over training")
    ax = axes[0]
    for r, series in data:
        for stage, (xs, ys) in sorted(series.items()):
            sns.lineplot(
                x=xs,
                y=ys,
                ax=ax,
                label=f"{r.label} stage {stage}",
                color=family_color(r.family),
                linestyle=STAGE_STYLES[stage % len(STAGE_STYLES)],
                estimator=None,
                sort=False,
            )
    ax.set(xlabel=BYTES_LABEL, ylabel="bytes per chunk (bytes)")
    _legend(fig, axes)
    return fig


def robustness(runs: list[Run]) -> Figure | None:
    """Grouped bars: accuracy (%) on clean text and under each perturbation, one bar per run."""
    import pandas as pd
    from hnetbench.reports.runs import _num
    from hnetbench.reports.tables import _pert_key, _robust_entries, perturbation_columns

    entries = _robust_entries(runs)
    if not entries:
        return None
    _theme()
    perts = perturbation_columns(entries)
    tasks = sorted({t for _, t, _ in entries})
    fig, axes = _panels(len(tasks), "Accuracy under perturbations (lines: 95% intervals)")
    for ax, task in zip(axes, tasks):
        rows = []
        for r, t, d in entries:
            if t != task:
                continue
            by_key = {_pert_key(k): _num(v) for k, v in d.items()}
            ci = d.get("ci95") or {}
            for cond, key in [("clean", "clean")] + [(lab, k) for k, lab in perts]:
                if by_key.get(key) is not None:
                    lo_hi = ci.get(key) if isinstance(ci.get(key), (list, tuple)) else None
                    rows.append(
                        {"condition": cond, "accuracy": 100.0 * by_key[key], "run": r.label,
                         "lo": 100.0 * lo_hi[0] if lo_hi else None,
                         "hi": 100.0 * lo_hi[1] if lo_hi else None}
                    )
        df = pd.DataFrame(rows)
        if df.empty:
            continue
        order = ["clean"] + [lab for _, lab in perts]
        fam = {r.label: r.family for r, _, _ in entries}
        labels = list(dict.fromkeys(df["run"]))
        sns.barplot(
            data=df,
            x="condition",
            y="accuracy",
            hue="run",
            hue_order=labels,
            palette={k: family_color(fam[k]) for k in labels},
            legend=False,
            order=[o for o in order if o in set(df["condition"])],
            errorbar=None,
            saturation=1.0,
            ax=ax,
        )
        used = [o for o in order if o in set(df["condition"])]
        seen: set[str] = set()
        for bars, label in zip(ax.containers, labels):
            # 95% interval of each accuracy (eval.json's ci95) as a line through its bar; lines,
            # not errorbar containers, so ax.containers stays one bar group per run
            mine = df[df["run"] == label].set_index("condition")
            for bar in bars:
                cond_i = int(round(bar.get_x() + bar.get_width() / 2))
                cond = used[cond_i] if 0 <= cond_i < len(used) else None
                if cond in mine.index and mine.loc[cond, "lo"] is not None \
                        and mine.loc[cond, "lo"] == mine.loc[cond, "lo"]:
                    x = bar.get_x() + bar.get_width() / 2
                    ax.vlines(x, mine.loc[cond, "lo"], mine.loc[cond, "hi"], colors="black",
                              linewidth=0.8)
            bars.set_label(label)  # the legend reads containers, so hatches show there too
            if fam[label] in seen:  # same family twice: hatch the second so bars stay apart
                for bar in bars:
                    bar.set_hatch("//")
            seen.add(fam[label])
        ax.set(title=f"task: {task}", xlabel="perturbation", ylabel="accuracy (%)")
        ax.tick_params(axis="x", rotation=30)
    _legend(fig, axes)
    return fig


FIGURES = {
    "bpb_vs_bytes": bpb_vs_bytes,
    "bpb_vs_flops": bpb_vs_flops,
    "bytes_per_chunk": bytes_per_chunk,
    "robustness": robustness,
}


def save_figure(fig: Figure, path_stem: Path) -> list[Path]:
    """PNG + PDF, each written to a temp name and renamed (a kill leaves no half file)."""
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        p = path_stem.with_suffix(f".{ext}")
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        out.append(p)
    return out


def save_all(runs: list[Run], out_dir: Path) -> dict[str, list[Path]]:
    paths = {}
    for name, fn in FIGURES.items():
        fig = fn(runs)
        if fig is not None:
            paths[name] = save_figure(fig, Path(out_dir) / name)
            plt.close(fig)
    return paths
