"""Data path at scale: `data prepare` speed and peak RSS on a generated corpus (>= 2 GB), then the
memmap loader's bytes/s per rank and the RSS a training process adds for it versus a 10 MB corpus.

    python -m hnetbench.benchmarks.data_prepare --gb 2 --json benchmarks/results/data_prepare.json

The corpus is real text (the embedded English training split) cut into documents at random
offsets and written as .jsonl files. Each measured step runs in a child process, so its peak RSS
(getrusage of the children, the largest process: the prepare's main process or a worker) and its
/proc RSS are its own. Targets (issue 17): prepare peak RSS < 1.5 GB; loader adds < 100 MB RSS
for 2 GB vs 10 MB; loader > 50 MB/s per rank.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LOADER_PROBE = r"""
import json, sys, time
def rss():
    out = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon", "RssFile"):
            out[k] = int(v.split()[0]) * 1024
    return out
import torch  # noqa: F401  (a training process has torch loaded before its loader)
from hnetbench.config import DataConfig
from hnetbench.data.loader import build_loader
path, seq_len, batch, world, n_batches = sys.argv[1], *map(int, sys.argv[2:6])
before = rss()
cfg = DataConfig(source="prepared", path=path, seq_len=seq_len, batch_size=batch)
loader = build_loader(cfg, "train", 0, None, 0, world)
it = iter(loader)
next(it)
t0, c0 = time.perf_counter(), time.process_time()
nbytes = sum(next(it)["n_bytes"] for _ in range(n_batches))
dt, cpu = time.perf_counter() - t0, time.process_time() - c0
after = rss()
print(json.dumps({"bytes_per_s": nbytes / dt, "bytes_per_cpu_s": nbytes / cpu,
                  "batches": n_batches, "seconds": dt, "cpu_seconds": cpu,
                  "windows": loader.n_windows, "before": before, "after": after}))
"""


def generate(folder: Path, total: int, n_files: int = 8, seed: int = 0) -> int:
    """`total` bytes of documents (0.2-8 KB each) in n_files .jsonl files; returns bytes written."""
    from hnetbench.data import load_documents

    base = b"\n\n".join(load_documents("en", "train")).decode("utf-8", errors="ignore")
    rng = np.random.default_rng(seed)
    per_file, written = total // n_files, 0
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n_files):
        with open(folder / f"part-{k:03d}.jsonl", "w", encoding="utf-8") as f:
            size = 0
            while size < per_file:
                lens = rng.integers(200, 8000, 4096)
                offs = rng.integers(0, len(base) - 8000, 4096)
                lines = "".join(json.dumps({"text": base[o : o + n]}) + "\n"
                                for o, n in zip(offs, lens))
                f.write(lines)
                size += len(lines)
        written += (folder / f"part-{k:03d}.jsonl").stat().st_size
    return written


# a fresh parent per step, so getrusage(children) is that step's own peak (main or a worker)
PEAK_WRAPPER = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, "
    "file=sys.stderr); sys.exit(r.returncode)"
)


def run_child(args: list[str]) -> tuple[str, float, int]:
    """(stdout, seconds, peak RSS bytes of its largest process) of a child command."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, *args], capture_output=True,
                       text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{' '.join(args[:6])} ...: failed: {r.stderr.strip()[-500:]}")
    peak = int(r.stderr.strip().splitlines()[-1].split()[1])
    return r.stdout, dt, peak


def prepare(src: Path, out: Path, tokenizer: str = "bytes", workers: int | None = None) -> dict:
    cmd = [sys.executable, "-m", "hnetbench", "data", "prepare", "data.source=files",
           f"data.path={src}", f"data.tokenizer={tokenizer}", "--out", str(out)]
    if workers:
        cmd += ["--workers", str(workers)]
    stdout, dt, peak = run_child(cmd)
    man = json.loads(stdout.strip().splitlines()[-1])
    nbytes = sum(s["bytes"] for s in man["splits"].values())
    return {"tokenizer": tokenizer, "bytes": nbytes, "seconds": round(dt, 1),
            "MB_per_s": round(nbytes / 1e6 / dt, 1), "peak_rss_MB": round(peak / 1e6)}


def probe_loader(prepared: Path, seq_len: int, batch: int, world: int, n: int) -> dict:
    stdout, _, _ = run_child([sys.executable, "-c", LOADER_PROBE, str(prepared), str(seq_len),
                              str(batch), str(world), str(n)])
    return json.loads(stdout)


def disk_random_reads(folder: Path, n: int = 400, size: int = 8193, seed: int = 99) -> float:
    """MB/s of random `size`-byte preads over the prepared shards (the disk's own bound for a
    loader reading random windows of a corpus that is not in the page cache)."""
    files = sorted(folder.glob("bytes/train-*.tokens.npy"))
    rng = np.random.default_rng(seed)
    fds = [os.open(f, os.O_RDONLY) for f in files]
    t0 = time.perf_counter()
    for i in rng.integers(0, len(fds), n):
        os.pread(fds[i], size, int(rng.integers(0, os.fstat(fds[i]).st_size - size)))
    dt = time.perf_counter() - t0
    for fd in fds:
        os.close(fd)
    return n * size / dt / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0, help="generated corpus size (GB)")
    ap.add_argument("--bpe-mb", type=float, default=64, help="slice prepared with a trained BPE")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from hnetbench.benchmarks.common import write_json

    work = Path(args.workdir or tempfile.mkdtemp(prefix="hnb-data-bench-"))
    os.environ.setdefault("HNETBENCH_CACHE", str(work / "cache"))
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    big = generate(work / "big", int(args.gb * 1e9))
    small = generate(work / "small", 10_000_000, n_files=1, seed=1)
    bpe_src = generate(work / "bpe", int(args.bpe_mb * 1e6), n_files=2, seed=2)
    gen_s = time.perf_counter() - t0
    print(f"generated {big / 1e9:.2f} GB + {small / 1e6:.0f} MB + {bpe_src / 1e6:.0f} MB of "
          f"jsonl in {gen_s:.0f} s", flush=True)

    rows = {"prepare_2gb_bytes": prepare(work / "big", work / "prep-big"),
            "prepare_10mb_bytes": prepare(work / "small", work / "prep-small"),
            "prepare_bpe_slice": prepare(work / "bpe", work / "prep-bpe", "bpe")}
    for k, v in rows.items():
        print(k, v, flush=True)
    # loader: a paper-L-shaped global batch (256 x 8192 bytes) over 8 ranks; rank 0 measured
    disk = round(disk_random_reads(work / "prep-big"), 1)
    print(f"disk: random 8 KB reads {disk} MB/s", flush=True)
    loader = {}
    for name in ("big", "small"):
        loader[name] = probe_loader(work / f"prep-{name}", 8192, 256, 8, 40)
        print(name, loader[name], flush=True)
    added = {k: (loader["big"]["after"][k] - loader["big"]["before"][k])
             - (loader["small"]["after"][k] - loader["small"]["before"][k])
             for k in ("VmRSS", "RssAnon", "RssFile")}
    result = {
        "machine": {"cores": os.cpu_count(), "loadavg_start": load0,
                    "loadavg_end": os.getloadavg()},
        "corpus_bytes": big, "generate_s": round(gen_s, 1), "prepare": rows,
        "loader": loader,
        "loader_rank_MB_per_s": {k: round(v["bytes_per_s"] / 1e6, 1) for k, v in loader.items()},
        "loader_rank_MB_per_cpu_s": {k: round(v["bytes_per_cpu_s"] / 1e6, 1)
                                     for k, v in loader.items()},
        "loader_added_rss_MB_2gb_vs_10mb": {k: round(v / 1e6, 1) for k, v in added.items()},
        "disk_random_8k_reads_MB_per_s": disk,
    }
    print(json.dumps({k: result[k] for k in ("machine", "loader_rank_MB_per_s",
                                             "loader_rank_MB_per_cpu_s",
                                             "disk_random_8k_reads_MB_per_s",
                                             "loader_added_rss_MB_2gb_vs_10mb")}, indent=1))
    write_json(args.json, result)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
