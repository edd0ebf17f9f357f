"""The training loop: AdamW with per-stage LR groups, WSD/cosine/constant schedules, gradient
accumulation, data parallelism, metrics, checkpoints and exact resume.

Batching: `data.batch_size` sequences per loader batch; an optimizer step consumes
`train.grad_accum` loader batches. Under data parallelism rank r of W gets rows
[r*B/W, (r+1)*B/W) of each global batch (the loader reads only those windows), so a run's
trajectory does not depend on the number of processes, and the loader state is the same on
every rank.

Loss weighting: each micro-batch shard backpropagates `nats_shard / N + ratio_shard / (A * W)`,
where N counts the scored targets of the whole optimizer step (known to every rank), A is
grad_accum and W the world size, and gradients are summed over ranks. The AR part is therefore
exactly the mean over all scored targets of the step, whatever the sharding; the ratio loss
(a product of batch means inside each forward) is averaged over shards, as any data-parallel
implementation does. Router statistics (`stage{s}/...` in metrics.jsonl) are rank 0's.
The ratio loss's statistics F and G are summed over ranks inside the forward (global batch of
the micro-batch), so every rank's ratio loss is the global one and carries the gradient of its
own rows: it is weighted 1/A, not 1/(A W), and the trajectory does not depend on W.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hnetbench.config import ConfigError, RunConfig, atomic_write_text, save_config
from hnetbench.machine import training_machine
from hnetbench.train import checkpoint as ck
from hnetbench.train import plan
from hnetbench.train.compile import compile_blocks
from hnetbench.train.compile import resolve_mode as resolve_compile
from hnetbench.train.distributed import (
    DistEnv,
    all_reduce_grads,
    all_reduce_sum,
    barrier,
    broadcast_params,
    init_distributed,
    shutdown,
    sum_over_ranks,
)
from hnetbench.train.malloc import keep_freed_memory
from hnetbench.train.metrics import MetricsFile, Progress
from hnetbench.train.perf import check_mfu, load_average, peak_flops
from hnetbench.train.schedule import lr_factor

LN2 = math.log(2.0)


class StopRequest:
    """Set by a signal handler (a sweep job's preemption / time-limit / cancel signal): the loop
    checkpoints at the current step and returns a "stopped" summary, so no step is lost. Every
    rank must see it before stopping (ranks agree through an all-reduce after each step)."""

    signal: int | None = None  # the signal asked for a stop; None = go on
    in_loop: bool = False  # True while the step loop runs (a stop is honoured at a step's end)


def request_stop(signum: int) -> bool:
    """Ask the running loop to stop at the end of its step; False when no loop runs here."""
    StopRequest.signal = signum
    return StopRequest.in_loop


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN/inf; the run stopped before applying the update."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Batches:
    """Endless iteration over a loader (a new pass when one ends); the loader's own state_dict
    carries the position."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.it = iter(loader)

    def next(self) -> dict:
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)


def shard(batch: dict, env: DistEnv, device: torch.device) -> tuple[torch.Tensor, ...]:
    """This rank's rows of (input_ids, targets, doc_start)."""
    per = batch["input_ids"].shape[0] // env.world_size
    rows = slice(env.rank * per, (env.rank + 1) * per)
    if batch.get("sharded"):  # the loader already read only this rank's windows
        rows = slice(None)
    nb = device.type == "cuda"
    keys = ("input_ids", "targets", "doc_start")
    return tuple(batch[k][rows].to(device, non_blocking=nb) for k in keys)


def summed_nats(out: Any) -> torch.Tensor:
    """Summed nats over the scored targets, differentiable."""
    nats = out.nats_sum
    if isinstance(nats, torch.Tensor) and nats.requires_grad:
        return nats.float()
    return out.ar_loss.float() * float(out.n_targets)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Any, n_batches: int, env: DistEnv,
             device: torch.device, amp: torch.dtype | None) -> float | None:
    """Validation bits per byte on the first `n_batches` batches of the val loader's first epoch
    (the same batches every time), sharded over ranks like training."""
    was_training = model.training
    model.eval()
    nats = torch.zeros((), dtype=torch.float64, device=device)
    n_bytes, sharded = 0, False
    batches = loader.iter_epoch(0) if hasattr(loader, "iter_epoch") else iter(loader)
    for i, batch in enumerate(batches):
        if i >= n_batches:
            break
        ids, tgt, ds = shard(batch, env, device)
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            out = model(ids, targets=tgt, doc_start=ds)
        nats += torch.as_tensor(out.nats_sum, dtype=torch.float64, device=device)
        n_bytes += int(batch["n_bytes"])
        sharded = bool(batch.get("sharded"))
    if sharded:  # each rank counted its own rows (every rank reduces, even with 0 bytes)
        n_bytes = int(all_reduce_sum(torch.tensor(n_bytes, dtype=torch.int64, device=device), env))
    all_reduce_sum(nats, env)
    model.train(was_training)
    return float(nats) / LN2 / n_bytes if n_bytes else None


def train(run_cfg: RunConfig, out_dir: str | os.PathLike, force: bool = False,
          max_steps: int | None = None) -> dict:
    """Train `run_cfg` into `out_dir`, resuming from `out_dir/ckpt/` when a checkpoint exists.

    A resume whose config differs from the checkpoint's in a key that changes the trajectory
    (all but plan.RESUME_FREE_KEYS; budget keys included, since the schedule depends on the
    total) is refused unless `force`, which continues the saved weights and optimizer under the
    new config. `max_steps` stops (with a checkpoint) once that many steps are done in total; the
    schedule still spans the full budget and no summary.json is written for such a stop.
    Returns the summary dict (`status` "completed" or "stopped"); raises TrainingDiverged on a
    NaN/inf loss or gradient norm.
    """
    plan.validate(run_cfg)
    env = init_distributed(plan.device_type(run_cfg))
    try:
        return Trainer(run_cfg, Path(out_dir), env).run(force, max_steps)
    finally:
        shutdown(env)


class Trainer:
    def __init__(self, run_cfg: RunConfig, out: Path, env: DistEnv) -> None:
        self.cfg, self.out, self.env = run_cfg, out, env
        self.tc, self.dc = run_cfg.train, run_cfg.data
        self.ckpt_root = out / "ckpt"
        self.t_start = time.perf_counter()
        kind = plan.device_type(run_cfg)
        self.device = torch.device(kind, env.local_rank) if kind == "cuda" else torch.device("cpu")
        if self.device.type == "cpu":  # a step re-uses the last one's memory (train/malloc.py)
            keep_freed_memory()
        self.amp = plan.autocast_dtype(run_cfg, self.device)
        if self.dc.batch_size % env.world_size:
            raise ConfigError(f"data.batch_size: expected a multiple of the world size "
                              f"{env.world_size}, got {self.dc.batch_size}")
        self.step, self.bytes_seen, self.flops_seen, self.wall_prev = 0, 0, 0.0, 0.0
        self.leg_bytes_start = 0  # bytes_seen where this leg began (run() sets it after resuming)
        self.load_start, self.cpu_start = load_average(), time.process_time()
        self.peak_refreshed, self.perf_logged, self.mfu_refused = False, False, None
        self.last_ckpt: str | None = None
        self.skipped_ckpts: list[str] = []

    # ------------------------------------------------------------------ setup

    def _resume_dir(self, force: bool) -> tuple[Path | None, dict | None]:
        """The checkpoint to resume from (the newest that verifies, config checked) and a
        finished run's summary when there is nothing left to do."""
        if self.env.is_main:
            ck.clean_temp(self.ckpt_root)
        barrier(self.env)
        path, manifest, self.skipped_ckpts = ck.newest_valid_checkpoint(self.ckpt_root)
        if path is None or manifest is None:
            return None, None
        if self.env.is_main and not self.skipped_ckpts:
            # finish a pruning a kill interrupted (only when the newest verifies: a fallback
            # must not lose the older checkpoint it resumes from)
            ck.prune_checkpoints(self.ckpt_root, self.tc.keep_last)
        if self.skipped_ckpts and self.env.is_main:  # never silent: one line here, one in metrics
            print(f"[{self.cfg.name}] resuming from {path} (step {manifest['step']}), the newest "
                  f"checkpoint that verifies; skipped: {'; '.join(self.skipped_ckpts)}",
                  file=sys.stderr, flush=True)
        changes = plan.config_changes(ck.checkpoint_config(path), self.cfg)
        if changes and not force:
            more = f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
            raise ConfigError(
                f"{path / 'config.yaml'}: config differs from the checkpointed run "
                f"({'; '.join(changes[:3])}{more}); pass --force to resume with the new config")
        summary_path = self.out / "summary.json"
        if summary_path.exists() and not changes and not self.skipped_ckpts:
            try:
                prev = json.loads(summary_path.read_text(encoding="utf-8"))
            except ValueError:
                prev = {}
            if prev.get("status") == "completed" and prev.get("steps") == manifest["step"]:
                return path, prev
        return path, None

    def _build(self) -> None:
        from hnetbench.data import build_loader
        from hnetbench.models import build_model

        tc = self.tc
        seed_everything(tc.seed)
        self.model = build_model(self.cfg.model).to(self.device)
        self.model.ratio_reduce = sum_over_ranks(self.env)
        broadcast_params(self.model, self.env)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.n_params = sum(p.numel() for p in self.model.parameters())
        groups = self.model.param_groups(tc.weight_decay, tc.lr_mult)
        for g in groups:
            g.setdefault("lr_mult", 1.0)
            g["lr"] = tc.lr * g["lr_mult"]
        kwargs: dict[str, Any] = dict(lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
        if self.device.type in ("cuda", "cpu"):  # one kernel over all tensors, not a loop
            kwargs["fused"] = True
        self.opt = torch.optim.AdamW(groups, **kwargs)
        self.fwd = self.model  # train.compile compiles its blocks in place (after _build)
        world = (self.env.rank, self.env.world_size)  # each rank reads its own windows
        self.loader = build_loader(self.dc, "train", tc.seed, None, *world)
        n_ids = self.loader.tokenizer.vocab_size
        if self.cfg.model.vocab_size < n_ids:  # an id past the embedding would crash deep in torch
            raise ConfigError(
                f"model.vocab_size {self.cfg.model.vocab_size} is smaller than the "
                f"{self.loader.tokenizer.name} tokenizer's {n_ids} ids")

        self.val_loader = (build_loader(self.dc, "val", tc.seed, self.loader.tokenizer, *world)
                           if tc.eval_batches > 0 else None)
        bytes_per_token = float(getattr(self.loader, "bytes_per_token", 1.0))
        self.fwd_fpb = plan.forward_flops_per_byte(self.cfg, bytes_per_token)
        self.total_steps = plan.plan_steps(self.cfg, self.fwd_fpb)
        self.peak = peak_flops(self.device, self.amp is not None)
        mode = resolve_compile(tc.compile, self.device,
                               plan.bytes_per_step(self.cfg) * self.total_steps)
        self.compile_stats = compile_blocks(self.model, mode)

    def _load(self, path: Path) -> None:
        ck.load_weights(self.model, path)
        state = ck.load_state(path)
        current = [{k: v for k, v in g.items() if k != "params"} for g in self.opt.param_groups]
        if len(state["optimizer"]["param_groups"]) != len(current):
            raise ck.CheckpointError(f"{path / 'state.json'}: optimizer groups do not fit model")
        self.opt.load_state_dict(state["optimizer"])
        for g, cur in zip(self.opt.param_groups, current):
            g.update(cur)  # hyper-parameters follow the current config (matters under --force)
        self.loader.load_state_dict(state["loader"])
        ck.set_rng_state(state["rng"])
        tr = state["trainer"]
        self.step, self.bytes_seen = tr["step"], tr["bytes_seen"]
        self.flops_seen, self.wall_prev = tr["flops_seen"], tr["wall_s"]
        self.last_ckpt = str(path)

    def _wall(self) -> float:
        return self.wall_prev + time.perf_counter() - self.t_start

    def _save(self) -> None:
        if not self.env.is_main:
            return
        state = {
            "optimizer": self.opt.state_dict(),
            "rng": ck.rng_state(),
            "loader": self.loader.state_dict(),
            "trainer": {"step": self.step, "bytes_seen": self.bytes_seen,
                        "flops_seen": self.flops_seen, "wall_s": self._wall()},
        }
        path = ck.save_checkpoint(self.ckpt_root, self.step, self.model, state, self.cfg,
                                  self.tc.keep_last)
        self.last_ckpt = str(path)

    # ------------------------------------------------------------------ one step

    def train_step(self, batches: Batches) -> dict:
        """One optimizer step over grad_accum loader batches; returns the step's metrics."""
        tc, env, device = self.tc, self.env, self.device
        factor = lr_factor(self.step, self.total_steps, tc.schedule, tc.warmup_frac, tc.decay_frac)
        for g in self.opt.param_groups:
            g["lr"] = tc.lr * g["lr_mult"] * factor
        micro = [batches.next() for _ in range(tc.grad_accum)]
        n_targets = sum(int((b["targets"] != -100).sum()) for b in micro)
        step_bytes = sum(int(b["n_bytes"]) for b in micro)
        if micro[0].get("sharded"):  # rank-local batches: the step's totals over all ranks
            counts = torch.tensor([n_targets, step_bytes], dtype=torch.int64, device=device)
            n_targets, step_bytes = (int(x) for x in all_reduce_sum(counts, env).tolist())
        n_targets = max(1, n_targets)
        share = 1.0 / (tc.grad_accum * env.world_size)
        acc = torch.zeros(3, dtype=torch.float64, device=device)  # nats, ratio part, ratio loss
        stats: dict[str, float] = {}
        for b in micro:
            ids, tgt, ds = shard(b, env, device)
            with torch.autocast(device.type, dtype=self.amp or torch.bfloat16,
                                enabled=self.amp is not None):
                o = self.fwd(ids, targets=tgt, doc_start=ds)
            nats = summed_nats(o)
            if tc.debug_nan_step and self.step + 1 == tc.debug_nan_step:
                nats = nats * float("nan")
            ratio_part = (o.loss.float() - o.ar_loss.float()) * share
            # the ratio loss is already global (F, G reduced over ranks): weight 1/A
            (nats / n_targets + ratio_part * env.world_size).backward()
            acc[0] += nats.detach().double()
            acc[1] += ratio_part.detach().double()
            acc[2] += float(o.ratio_loss.detach()) * share
            for k, v in (o.stats or {}).items():
                stats[k] = stats.get(k, 0.0) + float(v) / len(micro)
        all_reduce_grads(self.params, env)
        nats_total, ratio_total, ratio_loss = all_reduce_sum(acc, env).tolist()
        loss = nats_total / n_targets + ratio_total
        if not math.isfinite(loss):
            self._diverged("loss", loss)
        clip = tc.grad_clip if tc.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        if not math.isfinite(grad_norm):
            self._diverged("gradient norm", grad_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.bytes_seen += step_bytes
        if self.fwd_fpb is not None:
            self.flops_seen += 3.0 * self.fwd_fpb * step_bytes
        rec = {"step": self.step, "loss": loss, "ar_loss": nats_total / n_targets,
               "bpb": nats_total / LN2 / max(step_bytes, 1), "ratio_loss": ratio_loss,
               "lr": tc.lr * factor, "grad_norm": grad_norm, "step_bytes": step_bytes}
        for i, g in enumerate(self.opt.param_groups):
            rec[f"lr/{g.get('name', i)}"] = g["lr"]
        rec.update(stats)
        return rec

    def _mfu(self, bps: float) -> float | None:
        """MFU of this span; an MFU > 1 re-measures the peak once, and is refused if it stays."""
        mfu = bps * 3.0 * self.fwd_fpb / (self.peak * self.env.world_size)
        if mfu > 1.0 and not self.peak_refreshed:
            self.peak_refreshed = True
            self.peak = peak_flops(self.device, self.amp is not None, refresh=True) or self.peak
            mfu = bps * 3.0 * self.fwd_fpb / (self.peak * self.env.world_size)
        mfu, self.mfu_refused = check_mfu(mfu, self.peak)
        return mfu

    def _perf_fields(self, rec: dict) -> dict:
        """Compile cost on every log line; the first line of a process also records the peak
        used, where it came from, the load at start and the thread count (issue 25)."""
        out = self.compile_stats.as_metrics()
        if self.mfu_refused:
            out["mfu_refused"] = self.mfu_refused
        if not self.perf_logged:
            self.perf_logged = True
            out.update(peak_flops=float(self.peak) if self.peak else None,
                       peak_source=getattr(self.peak, "source", None),
                       loadavg_start=self.load_start, threads=torch.get_num_threads())
        return out

    def _diverged(self, what: str, value: float) -> None:
        msg = (f"{what} is {value} at step {self.step + 1}; stopped before the update "
               f"(last good checkpoint: {self.last_ckpt or 'none'})")
        if self.env.is_main:
            self.metrics.write({"step": self.step + 1, "event": "diverged", "error": msg})
            self._write_summary(self._summary("diverged", None, error=msg))
        raise TrainingDiverged(msg)

    # ------------------------------------------------------------------ the loop

    def run(self, force: bool, max_steps: int | None) -> dict:
        resume, done = self._resume_dir(force)
        if done is not None:
            return done
        plan.check_memory(self.cfg, self.device, self.env.world_size)
        self._build()
        if resume is not None:
            self._load(resume)
        self.leg_bytes_start = self.bytes_seen
        # only now, with the resume checked (weights and optimizer loaded), touch the run dir
        if self.env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out / "config.yaml")
        main = self.env.is_main
        batches = Batches(self.loader)
        self.metrics = MetricsFile(self.out / "metrics.jsonl",
                                   self.step if resume else None) if main else None
        if main and self.skipped_ckpts:
            self.metrics.write({"step": self.step, "event": "checkpoint_fallback",
                                "resumed_from": str(resume), "skipped": self.skipped_ckpts})
        nominal = plan.bytes_per_step(self.cfg) * self.total_steps
        progress = Progress(self.cfg.name, nominal, self.bytes_seen, enabled=self.env.is_main)
        stop_at = self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        self.model.train()
        StopRequest.signal, StopRequest.in_loop = None, True
        try:
            return self._loop(batches, progress, stop_at)
        finally:
            StopRequest.in_loop = False

    def _stop_requested(self) -> bool:
        asked = StopRequest.signal is not None
        if not self.env.enabled:
            return asked
        flag = torch.tensor([float(asked)], device=self.device)
        return bool(all_reduce_sum(flag, self.env).item() > 0)

    def _loop(self, batches: Batches, progress: Progress, stop_at: int) -> dict:
        tc, main = self.tc, self.env.is_main
        val_bpb = None
        span_bytes, span_time, span_steps = 0, 0.0, 0  # throughput since the last log line
        while self.step < stop_at:
            t0 = time.perf_counter()
            rec = self.train_step(batches)
            span_time += time.perf_counter() - t0
            step_bytes = rec.pop("step_bytes")
            span_bytes += step_bytes
            span_steps += 1
            progress.update(step_bytes)
            last = self.step == stop_at
            if self.step % tc.log_every == 0 or self.step == 1 or last:
                bps = span_bytes / span_time if span_time > 0 else 0.0
                mfu = None
                if self.fwd_fpb and self.peak:
                    mfu = self._mfu(bps)
                rec.update(bytes_seen=self.bytes_seen, bytes_per_s=bps, mfu=mfu,
                           flops_seen=self.flops_seen if self.fwd_fpb is not None else None)
                rec.update(self._perf_fields(rec))
                if main:
                    self.metrics.write(rec)
                eta = (self.total_steps - self.step) * span_time / max(1, span_steps)
                progress.log(rec, self.total_steps, eta)
                span_bytes, span_time, span_steps = 0, 0.0, 0
            final = self.step == self.total_steps
            if (tc.eval_every > 0 and self.step % tc.eval_every == 0) or final:
                val_bpb = self._eval(progress)
            due = (tc.ckpt_every > 0 and self.step % tc.ckpt_every == 0) or last
            if due:
                self._save()
            if not last and self._stop_requested():
                if not due:
                    self._save()  # the signal's step: a requeued job resumes here, nothing lost
                break
        if self.step == self.total_steps and val_bpb is None:
            # resumed from the final checkpoint (its val line is already logged): no step ran
            val_bpb = self._eval(progress, log=False)
        progress.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.step < self.total_steps:
            barrier(self.env)
            return self._summary("stopped", None)
        summary = self._summary("completed", val_bpb)
        if main:
            self._write_summary(summary)
        barrier(self.env)
        return summary

    def _eval(self, progress: Progress, log: bool = True) -> float | None:
        if self.val_loader is None:
            return None
        val_bpb = evaluate(self.model, self.val_loader, self.tc.eval_batches, self.env,
                           self.device, self.amp)
        if self.env.is_main and val_bpb is not None and log:
            self.metrics.write({"step": self.step, "split": "val", "val_bpb": val_bpb,
                                "bytes_seen": self.bytes_seen})
            progress.note(f"step {self.step} val_bpb {val_bpb:.4f}")
        return val_bpb

    def _summary(self, status: str, val_bpb: float | None, **extra: Any) -> dict:
        cfg = self.cfg
        return {
            "status": status,
            "steps": self.step,
            "total_steps": self.total_steps,
            "bytes_seen": self.bytes_seen,
            "flops_seen": self.flops_seen if self.fwd_fpb is not None else None,
            "params": self.n_params,
            "flops_per_byte": self.fwd_fpb,
            # UTF-8 bytes per model position on the training split (1 for byte models): what
            # compute matching assumed and the report's tokenizer table shows
            "bytes_per_token": round(float(getattr(self.loader, "bytes_per_token", 1.0)), 4),
            "final_val_bpb": val_bpb,
            "wall_s": round(self._wall(), 3),
            "family": cfg.preset.split("@", 1)[0] if cfg.preset else cfg.model.arch,
            "domain": cfg.data.domain,
            "name": cfg.name,
            "world_size": self.env.world_size,
            **({"stop_signal": StopRequest.signal} if status == "stopped" else {}),

            "cpu_s": round(time.process_time() - self.cpu_start, 3),  # this process, this leg
            "leg_bytes": self.bytes_seen - self.leg_bytes_start,
            "loadavg_start": self.load_start,
            # float32 results are bitwise the same only on the same vector ISA (machine.py);
            # this is the machine of the leg that wrote the summary
            "machine": training_machine(self.device.type),
            **(self.compile_stats.as_metrics() if hasattr(self, "compile_stats") else {}),
            **extra,
        }

    def _write_summary(self, summary: dict) -> None:
        atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=1) + "\n")
