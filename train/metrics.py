"""metrics.jsonl writing and human-readable progress (tqdm on a terminal, log lines otherwise)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hnetbench.config import atomic_write_text


class MetricsFile:
    """One JSON object per line, flushed per line so a kill loses at most the last one."""

    def __init__(self, path: Path, keep_upto: int | None) -> None:
        """`keep_upto` None starts a fresh file; a step keeps the lines up to that step (after a
        resume, lines logged past the checkpoint, and any torn last line, are dropped)."""
        self.path = path
        kept: list[str] = []
        if keep_upto is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= keep_upto:
                        kept.append(line)
                except (ValueError, AttributeError):
                    continue
        atomic_write_text(path, "".join(s + "\n" for s in kept))
        self.f = open(path, "a", encoding="utf-8")

    def write(self, rec: dict) -> None:
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def fmt_rate(bps: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if bps < 1000:
            return f"{bps:.1f} {unit}/s"
        bps /= 1000
    return f"{bps:.1f} TB/s"


def fmt_time(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """A tqdm bar counting bytes (so it shows bytes/s and ETA) when stderr is a terminal; plain
    log lines at every logged step otherwise (sweeps and CI capture stderr)."""

    def __init__(self, name: str, total_bytes: int, done_bytes: int, enabled: bool) -> None:
        self.name, self.bar = name, None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_bytes, initial=min(done_bytes, total_bytes), unit="B",
                            unit_scale=True, desc=name, dynamic_ncols=True)

    def update(self, n_bytes: int) -> None:
        if self.bar is not None:
            self.bar.update(n_bytes)

    def log(self, rec: dict, total_steps: int, eta_s: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(step=rec["step"], loss=f"{rec['loss']:.4f}",
                                 bpb=f"{rec['bpb']:.3f}")
            return
        print(f"[{self.name}] step {rec['step']}/{total_steps} loss {rec['loss']:.4f} "
              f"bpb {rec['bpb']:.3f} lr {rec['lr']:.2e} gnorm {rec['grad_norm']:.2f} "
              f"{fmt_rate(rec['bytes_per_s'])} eta {fmt_time(eta_s)}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(f"[{self.name}] {text}", file=sys.stderr)
        else:
            print(f"[{self.name}] {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
