"""Issue 21: training speed of today's code against the previous scan, in one process.

    python benchmarks/speedup.py [--presets hnet-1stage@cpu-tiny ...] [--compile PRESET ...]
                                 [--settle-steps 40] [--parity-steps 50 [--parity-f64]
                                 [--parity-nudge] [--parity-run]]
                                 [--skip-speed] [--json out.json]

For every preset the same model (same weights, same batch of real text) takes training steps
(forward, backward, AdamW) alternately with the code issue 21 started from ("before": the
chunked SSD `mamba2.ssd_chunked`, the written-out conv `doc_conv_reference` then silu, the
mixer's one split in_proj and conv, autograd's gated norm, attention's permute and torch RoPE,
torch SDPA with the full mask, torch's SwiGLU activation, RMSNorm and cross-entropy, AdamW's
loop over tensors, an H-Net's inner stages over the batch padded to its longest row) and the
current defaults ("after": the C scan, conv, norms, RoPE, attention, SwiGLU and cross-entropy,
the fused AdamW the trainer uses, the rows' chunks packed into one row); repetitions
interleave so machine load hits both alike (the order alternates per round). A third
variant, "null", runs the "before" code again: `null_ratio` (before / null) shows what the
alternation itself does to a ratio (~1). For an H-Net, "after_padded" (today's code, inner
stages padded) gives `pack_speedup`: what packing the rows does on its own.
The model is first trained `--settle-steps` steps (default 40) at its preset's learning rate:
an H-Net's work depends on how many chunks its router cuts, ~2 bytes per chunk when fresh
and ~5 when trained (where `reproduce`'s runs spend their steps), so a fresh model times a
step that training hardly ever takes. `--settle-steps 0` times fresh models (the measure of
the issue's starting figures). The timed steps run at learning rate 0, so the model and its
chunking stay put while they are timed.
Ratios are of CPU seconds per step (one thread: time slices lost to other processes do not
count), so they hold on a loaded machine; the ratio of the fastest wall-clock repetitions is
reported beside them. Bytes/s are bytes per CPU second.
For a byte-level preset the BPE Transformer of its scale takes its steps in the same
alternation (before and after code), so `after_vs_bpe_interleaved` (bytes/s over the BPE
Transformer's) is measured under the same load; `after_vs_bpe` divides by the BPE preset's own
row, timed minutes earlier, and moved by 20% between runs here.
`after_flops_vs_bpe_interleaved` is that ratio per analytic training FLOP (`hnetbench.flops` at
the chunking the H-Net did): the ratio of the two models' MFUs. A fresh router cuts ~2.5x the
chunks a trained one does, so its bytes/s falls with the work; its FLOP rate need not.
`--compile` adds `train.compile: blocks` on top for the named presets (and reports the
compile seconds).
`--parity-steps` trains two copies from the same init for that many steps, one per scan, and
reports the largest loss difference; `--parity-f64` adds a float64 copy (today's code) as
the exact curve and reports how far each float32 curve is from it, which tells a difference of
the code from rounding amplified by training, and the starting code in float64 too
("f64_before"): `f64_before_f64` is how far the two codes' arithmetic is apart without float32
rounding to amplify; `--parity-nudge` adds the control for that gap, today's code in float64
from weights a few ulps apart ("f64_nudged"). Those steps are plain AdamW at a constant 3e-3
from the first step; `--parity-run` takes the trainer's own steps instead (`Trainer.train_step`:
the preset's batch, warm-up and decay over the run, gradient clipping, per-stage rates), i.e.
the curves of a 50-step run as `hnetbench train` makes it. The load average is recorded before
and after: on a shared machine, absolute numbers mean little, the ratios measured here are the
result.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, train_step, write_json  # noqa: E402
from throughput import make_batch  # noqa: E402

PRESETS = [f"{f}@{s}" for s in ("cpu-tiny", "cpu-small")
           for f in ("transformer-bpe", "mambabyte", "hnet-1stage", "hnet-2stage")]


def _mixer_forward_before(self, u, seq, collect=None):  # noqa: ANN001, ANN202
    """Mamba2.forward as issue 21 found it: one in_proj split three ways, one conv over x|B|C
    split again (both splits' backward concatenate full-width gradients)."""
    import torch.nn.functional as F
    from hnetbench.models import mamba2

    b, L, _ = u.shape
    z, xBC_raw, dt = self._split(self.in_proj(u))
    xBC = F.silu(mamba2.doc_conv(xBC_raw, self.conv1d.weight[:, 0, :], self.conv1d.bias,
                                 seq.doc))
    x, B, C, dt = self._ssm_inputs(xBC, dt)
    valid = seq.valid()
    if valid is not None:
        dt = dt * valid[..., None].to(dt.dtype)
    # the starting code's `.float()`, widened as today's code widens (the same in float32 and
    # bf16; in a float64 run A stays float64, so both codes' float64 curves are exact math)
    A = -torch.exp(self.A_log.to(torch.promote_types(self.A_log.dtype, torch.float32)))
    y, _ = mamba2.ssd_scan(x, dt, A, B, C, self.chunk_size, seq.doc)
    y = y + x * self.D[:, None]
    y = self.norm(y.reshape(b, L, self.d_inner), z)
    return self.out_proj(y)


_AFTER: dict = {}


def use_scan(which: str) -> None:
    """Point the models at the code issue 21 started from ("before": the chunked scan
    `mamba2.ssd_chunked`, the written-out conv `doc_conv_reference`, one split in_proj and conv,
    autograd's gated norm, torch RoPE, SDPA, SwiGLU, RMSNorm and cross-entropy, H-Net inner
    stages over the padded batch) or today's ("after"; "after-padded": today's code with the
    inner stages over the padded batch, which isolates the packing of rows)."""
    import torch.nn.functional as F
    from hnetbench.kernels import attn_cpu, cross_entropy_cpu, swiglu_cpu
    from hnetbench.models import attention, doc_conv, hnet, mamba2, norm, ssd

    if not _AFTER:
        _AFTER.update(forward=mamba2.Mamba2.forward, norm=norm.GatedRMSNorm.forward,
                      qkv=attention.Attention._qkv, rms=norm.RMSNorm.forward,
                      c_ops={m: m.available for m in (attn_cpu, swiglu_cpu, cross_entropy_cpu)})

    def norm_before(self, x, z):  # noqa: ANN001, ANN202
        return norm.gated_rms_norm_reference(x, z, self.weight, self.group_size, self.eps)

    def rms_before(self, x):  # noqa: ANN001, ANN202
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)

    before = which == "before"
    hnet.PACK_ROWS = which == "after"
    mamba2.ssd_scan = mamba2.ssd_chunked if before else ssd.ssd_scan
    mamba2.doc_conv = doc_conv.doc_conv_reference if before else doc_conv.doc_conv
    mamba2.Mamba2.forward = _mixer_forward_before if before else _AFTER["forward"]
    norm.GatedRMSNorm.forward = norm_before if before else _AFTER["norm"]
    # Attention._qkv as issue 21 found it: permute the projection, torch RoPE on q and k
    attention.Attention._qkv = attention.Attention._qkv_torch if before else _AFTER["qkv"]
    norm.RMSNorm.forward = rms_before if before else _AFTER["rms"]
    # attention, the SwiGLU activation and the loss take their torch paths where C is off
    for module, available in _AFTER["c_ops"].items():
        module.available = (lambda: False) if before else available


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
          y: torch.Tensor) -> float:
    out = model(x, targets=y)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(out.loss.detach())


def settle(model: torch.nn.Module, cfg, steps: int) -> None:  # noqa: ANN001
    """Train `steps` steps at the preset's learning rate on its training data (today's code),
    so that a router reaches the compression it trains at: a fresh H-Net router cuts ~2 bytes
    per chunk, one trained 40 steps ~5 (the target is 6; runs of `reproduce` end at 4.8-5.1),
    and the main network's work follows. Models without a router return after one step."""
    from hnetbench.data import build_loader

    if steps <= 0:
        return
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    loader = iter(build_loader(cfg.data, "train", 0))
    for _ in range(steps):
        out = train_step(model, opt, next(loader))
        if not any("bytes_per_chunk" in k for k in out.stats):
            return


def compare(preset: str, batch: int, seq_bytes: int, repeats: int, with_compile: bool,
            settle_steps: int = 0) -> dict:
    from hnetbench.config import resolve
    from hnetbench.models import build_model
    from hnetbench.train.compile import compile_blocks

    cfg = resolve(base={"preset": preset})
    torch.manual_seed(0)
    model = build_model(cfg.model)
    settle(model, cfg, settle_steps)
    x, y, n_bytes, bpt = make_batch(cfg, batch, seq_bytes, "cpu")
    variants = {"before": (model, "before", x, y), "after": (model, "after", x, y),
                "null": (model, "before", x, y)}
    stats = None
    if with_compile:
        compiled = copy.deepcopy(model)
        stats = compile_blocks(compiled, "blocks")
        variants["after+compile"] = (compiled, "after", x, y)
    if cfg.model.arch == "hnet":  # today's code with the padded inner stages
        variants["after_padded"] = (model, "after-padded", x, y)
    scale = preset.split("@")[1]
    bpe_bytes = None
    if not preset.startswith("transformer-bpe"):
        # the BPE Transformer of the same scale in the same alternation (before and after
        # code): a ratio to it taken in one run of the loop, not between runs minutes apart
        bpe_cfg = resolve(base={"preset": f"transformer-bpe@{scale}"})
        torch.manual_seed(0)
        bpe = build_model(bpe_cfg.model)
        bx, by, bpe_bytes, bpe_bpt = make_batch(bpe_cfg, batch, seq_bytes, "cpu")
        variants["bpe_before"] = (bpe, "before", bx, by)
        variants["bpe_after"] = (bpe, "after", bx, by)
    # lr 0: the steps do all of AdamW's arithmetic but leave the model (and its router's
    # chunking) as it is, so repetitions time the same work. "before" steps with the
    # trainer's CPU optimizer of the start (a loop over tensors), today's with the
    # fused one the trainer uses now.
    opts = {k: torch.optim.AdamW(m.parameters(), lr=0.0, fused=scan != "before")
            for k, (m, scan, _, _) in variants.items()}
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    first: dict[str, float] = {}
    for r in range(repeats + 1):  # round 0 warms up (and compiles); order alternates per round
        order = list(variants.items()) if r % 2 == 0 else list(variants.items())[::-1]
        for k, (m, scan, vx, vy) in order:
            use_scan(scan)
            t0, c0 = time.perf_counter(), time.process_time()
            _step(m, opts[k], vx, vy)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if r:
                times[k].append(dt)
                cpu[k].append(dc)
            else:
                first[k] = dt
    use_scan("after")
    with torch.no_grad():
        chunk_stats = {k.split("/")[0]: round(float(v), 2)
                       for k, v in model(x, targets=y).stats.items() if "bytes_per_chunk" in k}
    # Ratios of CPU seconds per step (median): with one thread, time slices lost to other
    # processes do not count, so they hold on a loaded machine where wall time does not. The
    # fastest wall-clock repetition is reported beside them.
    c = {k: statistics.median(v) for k, v in cpu.items()}
    w = {k: min(v) for k, v in times.items()}
    row = {"preset": preset, "settle_steps": settle_steps, "bytes_per_chunk": chunk_stats,
           "before_bytes_cpu_s": n_bytes / c["before"],
           "after_bytes_cpu_s": n_bytes / c["after"], "speedup": c["before"] / c["after"],
           "speedup_wall_best": w["before"] / w["after"], "null_ratio": c["before"] / c["null"]}
    if "after_padded" in c:  # what packing the rows' chunks does on its own
        row["pack_speedup"] = c["after_padded"] / c["after"]
    row["train_flops_per_byte"] = _train_flops_per_byte(cfg, bpt, chunk_stats, seq_bytes)
    if bpe_bytes is not None:  # bytes/s over the BPE Transformer's, same alternation
        row["after_vs_bpe_interleaved"] = n_bytes / c["after"] / (bpe_bytes / c["bpe_after"])
        row["before_vs_bpe_interleaved"] = (n_bytes / c["before"]
                                            / (bpe_bytes / c["bpe_before"]))
        # the same ratio per FLOP (the ratio of the two MFUs, the peak cancels): an H-Net whose
        # router cuts more chunks does more work per byte, which bytes/s counts against it
        bpe_fpb = _train_flops_per_byte(bpe_cfg, bpe_bpt, {}, seq_bytes)
        row["bpe_train_flops_per_byte"] = bpe_fpb
        row["after_flops_vs_bpe_interleaved"] = (row["after_vs_bpe_interleaved"]
                                                 * row["train_flops_per_byte"] / bpe_fpb)
    if with_compile:
        row["compiled_bytes_cpu_s"] = n_bytes / c["after+compile"]
        row["speedup_compiled"] = c["before"] / c["after+compile"]
        row["speedup_compiled_wall_best"] = w["before"] / w["after+compile"]
        row["compile_s"] = stats.as_metrics()["compile_s"]
        row["compile_first_step_s"] = first["after+compile"]
    return row


def _train_flops_per_byte(cfg, bytes_per_token: float,  # noqa: ANN001
                          bytes_per_chunk: dict[str, float], seq_bytes: int) -> float:
    """Analytic training FLOPs per byte at the chunking the model did (`bytes_per_chunk`:
    cumulative per stage, as the model's stats give it)."""
    from hnetbench.flops import flops_per_byte

    cum = [bytes_per_chunk[k] for k in sorted(bytes_per_chunk)]
    comp = [v / (cum[i - 1] if i else 1.0) for i, v in enumerate(cum)] or None
    return flops_per_byte(cfg.model, bytes_per_token=bytes_per_token, compression=comp,
                          seq_len=seq_bytes, with_params=False).train_per_byte


# parity's curves: name -> (code, dtype); the first two are the float32 pair
# "f64_nudged": today's code in float64 from weights moved by ~4 ulps (x (1 + 2^-50)), the
# control for f64_before_f64: how far float64 rounding alone drifts over the run
VARIANTS = {"before": ("before", torch.float32), "after": ("after", torch.float32),
            "f64": ("after", torch.float64), "f64_before": ("before", torch.float64),
            "f64_nudged": ("after", torch.float64)}


def _variants(f64: bool, nudge: bool) -> list[str]:
    return (["before", "after"] + (["f64", "f64_before"] if f64 or nudge else [])
            + (["f64_nudged"] if nudge else []))


def _nudge(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + 2.0 ** -50)


def parity(preset: str, batch: int, seq_bytes: int, steps: int, f64: bool = False,
           nudge: bool = False) -> float | dict:
    """Largest |loss_before - loss_after| over `steps` training steps from the same init.
    With `f64`, also trains float64 copies of both codes and returns {"before_after",
    "before_f64", "after_f64", "f64_before_f64"}: how far each float32 curve is from today's
    code in float64, and how far the two codes are apart in float64; with `nudge` also
    f64_nudged_f64, the same code in float64 from weights a few ulps apart."""
    from hnetbench.config import resolve
    from hnetbench.data import build_loader
    from hnetbench.models import build_model

    cfg = resolve(base={"preset": preset, "data": {"batch_size": batch, "seq_len": seq_bytes}})
    losses = {}
    for scan in _variants(f64, nudge):
        code, dtype = VARIANTS[scan]
        use_scan(code)
        torch.manual_seed(0)
        model = build_model(cfg.model).to(dtype)
        if scan == "f64_nudged":
            _nudge(model)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, fused=code == "after")
        loader = iter(build_loader(cfg.data, "train", 0))
        curve = []
        for _ in range(steps):
            curve.append(float(train_step(model, opt, next(loader)).loss.detach()))
        losses[scan] = curve
    use_scan("after")
    gaps = _curve_gaps(losses)
    return gaps if f64 or nudge else gaps["before_after"]


def _curve_gaps(curves: dict[str, list[float]]) -> dict[str, float]:
    """Largest |difference| between the loss curves, pairwise: before_after, and with the
    float64 curves before_f64, after_f64 and f64_before_f64 (the two codes in float64), and
    f64_nudged_f64 where the nudged control ran."""
    def gap(a: str, b: str) -> float:
        return max(abs(u - v) for u, v in zip(curves[a], curves[b]))

    pairs = [("before", "after"), ("before", "f64"), ("after", "f64"), ("f64_before", "f64"),
             ("f64_nudged", "f64")]
    pairs = [(a, b) for a, b in pairs if a in curves and b in curves]
    return {f"{a}_{b}": gap(a, b) for a, b in pairs}


def parity_run(preset: str, steps: int, f64: bool = False, nudge: bool = False) -> dict:
    """Loss curves of a `steps`-step run of the trainer itself (the preset's batch, learning
    rate, warm-up and decay of the WSD schedule over `steps`, gradient clipping, per-stage
    learning-rate multipliers, weight decay) with the starting code ("before", AdamW's loop
    over tensors as the trainer of the issue's start used) and today's ("after", fused AdamW);
    with `f64`, also both codes in float64 (and with `nudge` the nudged control). Returns the
    largest loss gaps, as `parity` does, and the curves."""
    import tempfile

    from hnetbench.config import resolve
    from hnetbench.train.distributed import DistEnv
    from hnetbench.train.trainer import Batches, Trainer

    cfg = resolve(base={"preset": preset, "train": {"steps": steps, "train_bytes": 0,
                                                     "train_flops": 0.0, "eval_batches": 0,
                                                     "compile": "off", "device": "cpu"}})
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in _variants(f64, nudge):
            code, dtype = VARIANTS[variant]
            use_scan(code)
            trainer = Trainer(cfg, Path(tmp), DistEnv())
            trainer._build()
            assert trainer.total_steps == steps, (trainer.total_steps, steps)
            if code == "before":
                groups = [{**g, "fused": None, "foreach": False}
                          for g in trainer.opt.param_groups]
                trainer.opt = torch.optim.AdamW(groups)
            trainer.model.to(dtype)
            if variant == "f64_nudged":
                _nudge(trainer.model)
            batches = Batches(trainer.loader)
            trainer.model.train()
            curves[variant] = [trainer.train_step(batches)["loss"] for _ in range(steps)]
    use_scan("after")
    return {**_curve_gaps(curves), "curves": curves}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="*", default=PRESETS)
    ap.add_argument("--compile", nargs="*", default=[], help="presets to also compile")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-bytes", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--settle-steps", type=int, default=40,
                    help="train each model this many steps first (0: time fresh models)")
    ap.add_argument("--parity-steps", type=int, default=0)
    ap.add_argument("--parity-presets", nargs="*", default=None)
    ap.add_argument("--parity-batch", type=int, default=4)
    ap.add_argument("--parity-f64", action="store_true",
                    help="also train a float64 copy and report each float32 curve's distance")
    ap.add_argument("--parity-nudge", action="store_true",
                    help="with the float64 copies, also one from weights a few ulps apart "
                         "(the control for the two codes' float64 gap)")
    ap.add_argument("--parity-run", action="store_true",
                    help="parity over the trainer's own steps (schedule, clipping, the "
                         "preset's batch) instead of constant-rate AdamW steps")
    ap.add_argument("--skip-speed", action="store_true", help="parity only")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    t_cpu = time.process_time()
    rows = []
    for p in [] if args.skip_speed else args.presets:
        rows.append(compare(p, args.batch, args.seq_bytes, args.repeats, p in args.compile,
                            args.settle_steps))
        print(rows[-1], f"load {os.getloadavg()}", flush=True)
    for scale in ("cpu-tiny", "cpu-small"):
        ref = next((r for r in rows if r["preset"] == f"transformer-bpe@{scale}"), None)
        for r in rows:
            if ref and r["preset"].endswith(scale):
                r["after_vs_bpe"] = r["after_bytes_cpu_s"] / ref["after_bytes_cpu_s"]
                r["before_vs_bpe"] = r["before_bytes_cpu_s"] / ref["before_bytes_cpu_s"]
    par = {}
    if args.parity_steps:
        for p in args.parity_presets or [p for p in args.presets if "transformer" not in p]:
            f64 = args.parity_f64 or args.parity_nudge
            par[p] = (parity_run(p, args.parity_steps, f64, args.parity_nudge)
                      if args.parity_run
                      else parity(p, args.parity_batch, args.seq_bytes, args.parity_steps,
                                  f64, args.parity_nudge))
            shown = (f"{par[p]:.2e}" if not isinstance(par[p], dict)
                     else ", ".join(f"{k} {v:.2e}" for k, v in par[p].items() if k != "curves"))
            print(f"parity {p}: max |loss diff| over {args.parity_steps} steps = {shown}")
    load_after = os.getloadavg()
    print(f"threads {torch.get_num_threads()}, cores {os.cpu_count()}, load before "
          f"{load_before}, after {load_after}")
    if rows:
        print_table(rows, ["preset", "bytes_per_chunk", "before_bytes_cpu_s", "after_bytes_cpu_s",
                           "speedup", "speedup_wall_best", "null_ratio", "pack_speedup",
                           "before_vs_bpe", "after_vs_bpe", "before_vs_bpe_interleaved",
                           "after_vs_bpe_interleaved", "after_flops_vs_bpe_interleaved",
                           "speedup_compiled", "compile_s"])
    write_json(args.json, {"machine": machine(), "batch": args.batch, "seq_bytes": args.seq_bytes,
                           "settle_steps": args.settle_steps,
                           "load_before": load_before, "load_after": load_after,
                           "cpu_s": time.process_time() - t_cpu, "rows": rows,
                           "parity_max_abs_loss_diff": par})
    return 0


if __name__ == "__main__":
    sys.exit(main())
