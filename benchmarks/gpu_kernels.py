"""GPU benchmark: parity and speed of the Triton kernels (EMA scan, routing, and mamba_ssm's SSD
scan when it imports) against the torch paths, forward and forward+backward. Prints a table and
writes JSON (atomically) to OUT.

    python3 benchmarks/gpu_kernels.py [OUT.json] [--quick]

Parity is measured against the float64 sequential loop `ema_reference` (the ground truth) and
`cosine_probs_reference`; errors are max |err| / max |ref|, "g1"/"g2" the gradients of the two
inputs. Speed compares Triton with the blocked torch scan `ema_chunked` (what runs without
Triton; "torch" = its loop variant, "mm" = its matmul variant) and with the loop. The SSD rows
hold our torch scan `ssd_scan` (the CPU default, "torch") and mamba_ssm's
`mamba_chunk_scan_combined` ("tri") against `ssd_chunked` in float64, with document resets
(seq_idx); "g1"/"g2" are the gradients of x and dt (B and C's are in the JSON). `--smoke`
runs tiny shapes and also works on CPU under TRITON_INTERPRET=1, only to check this script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial

import torch
from hnetbench.kernels import triton_available
from hnetbench.kernels.ema import ema_chunked, ema_reference
from hnetbench.kernels.routing import cosine_probs_reference

EMA_SHAPES = [(8, 1024, 512), (8, 4096, 1024), (4, 8192, 2048)]  # (B, M, D)
ROUTE_SHAPES = [(8, 8192, 512), (8, 16384, 1024)]  # (B, L, D)
# (B, L, H, P, N): the paper's stage-0 Mamba-2 (d_model 1024: 32 heads of 64, state 128)
SSD_SHAPES = [(8, 2048, 32, 64, 128), (4, 8192, 32, 64, 128)]
EMA_TILES = [(64, 32), (64, 16), (32, 32), (128, 32), (64, 64)]  # (block_m, block_d)


def timeit(fn, device: torch.device, warmup: int = 3, reps: int = 20) -> float:
    """Median milliseconds per call (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def run_grad(f, inputs: tuple[torch.Tensor, ...], g: torch.Tensor):
    inputs = tuple(t.detach().requires_grad_(True) for t in inputs)
    out = f(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    return out.detach(), torch.autograd.grad(out, inputs, g)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, in float64."""
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def ema_inputs(B: int, M: int, D: int, dtype: torch.dtype, device: torch.device):
    gen = torch.Generator(device="cpu").manual_seed(M + D)
    x = torch.randn(B, M, D, generator=gen).to(device, dtype)
    p = torch.rand(B, M, generator=gen)
    p[torch.rand(B, M, generator=gen) < 0.02] = 1.0  # document starts: exact resets
    p[:, 0] = 1.0
    return x, p.to(device, dtype), torch.randn(B, M, D, generator=gen).to(device, dtype)


def bench_ema(shapes, dtypes, tiles, device, reps: int, loop_max_m: int) -> list[dict]:
    from hnetbench.kernels.ema_triton import ema_triton

    rows = []
    for B, M, D in shapes:
        for dtype in dtypes:
            x, p, g = ema_inputs(B, M, D, dtype, device)
            ref, (rdx, rdp) = run_grad(ema_reference, (x.double(), p.double()), g.double())
            out, (dx, dp) = run_grad(ema_triton, (x, p), g)
            row = dict(kernel="ema", B=B, M=M, D=D, dtype=str(dtype).split(".")[-1],
                       err_out=rel_err(out, ref), err_dx=rel_err(dx, rdx), err_dp=rel_err(dp, rdp))
            del ref, rdx, rdp
            tiles_ms = {}
            for bm, bd in tiles:
                fwd = partial(ema_triton, x, p, bm, bd)
                tiles_ms[f"{bm}x{bd}"] = timeit(fwd, device, reps=reps)
            best = min(tiles_ms, key=tiles_ms.get)
            bm, bd = (int(v) for v in best.split("x"))
            row["triton_tiles_fwd_ms"], row["best_tile"] = tiles_ms, best
            row["triton_fwd_ms"] = tiles_ms[best]
            tri = partial(ema_triton, block_m=bm, block_d=bd)
            row["triton_fwdbwd_ms"] = timeit(partial(run_grad, tri, (x, p), g), device, reps=reps)
            row["torch_chunked_fwd_ms"] = timeit(partial(ema_chunked, x, p), device, reps=reps)
            row["torch_chunked_fwdbwd_ms"] = timeit(
                partial(run_grad, ema_chunked, (x, p), g), device, reps=reps
            )
            mm = partial(ema_chunked, method="matmul")  # the within-block matmul variant
            mm_fb = partial(run_grad, mm, (x, p), g)
            row["torch_matmul_fwdbwd_ms"] = timeit(mm_fb, device, reps=reps)
            if M <= loop_max_m:
                row["loop_fwd_ms"] = timeit(partial(ema_reference, x, p), device, 1, 3)
            # bytes moved by the forward: read x and p, write h (float32)
            nbytes = x.numel() * x.element_size() + p.numel() * p.element_size() + x.numel() * 4
            row["triton_fwd_GBps"] = nbytes / (row["triton_fwd_ms"] * 1e-3) / 1e9
            rows.append(row)
            print_row(row)
    return rows


def bench_routing(shapes, dtypes, device, reps: int) -> list[dict]:
    from hnetbench.kernels.routing_triton import cosine_probs_triton

    rows = []
    for B, L, D in shapes:
        for dtype in dtypes:
            gen = torch.Generator(device="cpu").manual_seed(L + D)
            q = torch.randn(B, L, D, generator=gen).to(device, dtype)
            k = torch.randn(B, L, D, generator=gen).to(device, dtype)
            doc = (torch.rand(B, L, generator=gen) < 0.01).to(device)
            g = torch.randn(B, L, generator=gen).to(device, dtype)
            tri = partial(cosine_probs_triton, doc_start=doc)
            ref_fn = partial(cosine_probs_reference, doc_start=doc)
            ref, (rdq, rdk) = run_grad(ref_fn, (q.double(), k.double()), g.double())
            out, (dq, dk) = run_grad(tri, (q, k), g)
            _, bnd = cosine_probs_triton(q, k, doc)
            row = dict(kernel="routing", B=B, M=L, D=D, dtype=str(dtype).split(".")[-1],
                       err_out=rel_err(out, ref), err_dx=rel_err(dq, rdq), err_dp=rel_err(dk, rdk),
                       boundary_mismatch=(bnd != (ref > 0.5)).float().mean().item())
            row["triton_fwd_ms"] = timeit(partial(tri, q, k), device, reps=reps)
            row["triton_fwdbwd_ms"] = timeit(partial(run_grad, tri, (q, k), g), device, reps=reps)
            row["torch_chunked_fwd_ms"] = timeit(partial(ref_fn, q, k), device, reps=reps)
            row["torch_chunked_fwdbwd_ms"] = timeit(
                partial(run_grad, ref_fn, (q, k), g), device, reps=reps
            )
            rows.append(row)
            print_row(row)
    return rows


def _mamba_scan():  # noqa: ANN202
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as e:  # noqa: BLE001 - any failure means "not available"
        print(f"ssd: mamba_ssm does not import ({type(e).__name__}: {e}); torch scan only")
        return None
    return mamba_chunk_scan_combined


def ssd_inputs(B: int, L: int, H: int, P: int, N: int, dtype: torch.dtype, device: torch.device):
    gen = torch.Generator(device="cpu").manual_seed(L + H)
    x = torch.randn(B, L, H, P, generator=gen)
    dt = torch.nn.functional.softplus(torch.randn(B, L, H, generator=gen) - 3)
    A = -torch.exp(torch.rand(H, generator=gen) * 2.5)
    Bm, Cm = torch.randn(B, L, 1, N, generator=gen), torch.randn(B, L, 1, N, generator=gen)
    doc = (torch.rand(B, L, generator=gen) < 2e-3).long().cumsum(1)  # ~500-byte documents
    g = torch.randn(B, L, H, P, generator=gen)
    return ([t.to(device, dtype) for t in (x, dt)] + [A.to(device)]
            + [t.to(device, dtype) for t in (Bm, Cm)], doc.to(device), g.to(device, dtype))


def _ssd_measure(name: str, fn, ins, g, ref, rg, device, reps: int) -> dict:  # noqa: ANN001
    """Errors of output and of the x, dt, B, C gradients against float64, and timings."""
    t0 = time.perf_counter()
    out, grads = run_grad(fn, ins, g)
    res = {f"{name}_first_call_s": time.perf_counter() - t0}  # Triton: autotuning included
    for key, a, b in zip(("out", "dx", "ddt", "dB", "dC"), (out, *grads), (ref, *rg)):
        res[f"{name}_err_{key}"] = rel_err(a, b)
    res[f"{name}_fwd_ms"] = timeit(partial(fn, *ins), device, reps=reps)
    res[f"{name}_fwdbwd_ms"] = timeit(partial(run_grad, fn, ins, g), device, reps=reps)
    if name == "triton":
        print(f"ssd: mamba_ssm first fwd+bwd {res['triton_first_call_s']:.1f} s", flush=True)
    return res


def bench_ssd(shapes, dtypes, device, reps: int) -> list[dict]:
    from hnetbench.models.mamba2 import ssd_chunked
    from hnetbench.models.ssd import ssd_scan

    tri_scan = _mamba_scan()
    chunk = 256
    rows = []
    for B, L, H, P, N in shapes:
        for dtype in dtypes:
            (x, dt, A, Bm, Cm), doc, g = ssd_inputs(B, L, H, P, N, dtype, device)

            def ours(x, dt, Bm, Cm, A=A, doc=doc):  # noqa: ANN001, ANN202 - fp32 as in Mamba2
                y = ssd_scan(x.float(), dt.float(), A, Bm.float(), Cm.float(), chunk, doc)[0]
                return y.to(x.dtype)

            def ref64(x, dt, Bm, Cm, A=A, doc=doc):  # noqa: ANN001, ANN202
                return ssd_chunked(x, dt, A.double(), Bm, Cm, chunk, doc)[0]

            ins = (x, dt, Bm, Cm)
            ref, rg = run_grad(ref64, tuple(t.double() for t in ins), g.double())
            row = dict(kernel="ssd", B=B, M=L, D=H * P, dtype=str(dtype).split(".")[-1],
                       H=H, P=P, N=N)
            row.update(_ssd_measure("torch", ours, ins, g, ref, rg, device, reps))
            best = "torch"
            if tri_scan is not None:
                seq_idx = (doc - doc[:, :1]).int()

                def tri(x, dt, Bm, Cm, A=A, seq_idx=seq_idx):  # noqa: ANN001, ANN202
                    return tri_scan(x, dt, A, Bm, Cm, chunk, seq_idx=seq_idx)

                try:
                    row.update(_ssd_measure("triton", tri, ins, g, ref, rg, device, reps))
                    best = "triton"
                except Exception as e:  # noqa: BLE001 - keep the torch figures, name the failure
                    row["triton_error"] = f"{type(e).__name__}: {e}"[:300]
                    print(f"ssd: mamba_ssm scan failed: {row['triton_error']}", flush=True)
            # the table's columns: errors of mamba_ssm's scan when it ran, else of ours
            row.update(err_out=row[f"{best}_err_out"], err_dx=row[f"{best}_err_dx"],
                       err_dp=row[f"{best}_err_ddt"],
                       torch_chunked_fwd_ms=row["torch_fwd_ms"],
                       torch_chunked_fwdbwd_ms=row["torch_fwdbwd_ms"])
            row.setdefault("triton_fwd_ms", float("nan"))
            row.setdefault("triton_fwdbwd_ms", float("nan"))
            del ref, rg
            rows.append(row)
            print_row(row)
            if best == "triton":
                print(f"{'':<8}ours (torch ssd_scan) errors: out {row['torch_err_out']:.1e} "
                      f"dx {row['torch_err_dx']:.1e} ddt {row['torch_err_ddt']:.1e} "
                      f"dB {row['torch_err_dB']:.1e} dC {row['torch_err_dC']:.1e}", flush=True)
    return rows


HEADER = (f"{'kernel':<8}{'B':>3}{'M/L':>7}{'D':>6} {'dtype':<9}{'err out':>9}{'err g1':>9}"
          f"{'err g2':>9}{'tri fwd':>9}{'tri f+b':>9}{'torch fwd':>10}{'torch f+b':>10}"
          f"{'mm f+b':>8}{'loop fwd':>9}  ms / rel. errors vs float64 reference")


def print_row(r: dict) -> None:
    loop = f"{r['loop_fwd_ms']:>9.2f}" if "loop_fwd_ms" in r else f"{'-':>9}"
    mm = f"{r['torch_matmul_fwdbwd_ms']:>8.3f}" if "torch_matmul_fwdbwd_ms" in r else f"{'-':>8}"
    print(f"{r['kernel']:<8}{r['B']:>3}{r['M']:>7}{r['D']:>6} {r['dtype']:<9}{r['err_out']:>9.1e}"
          f"{r['err_dx']:>9.1e}{r['err_dp']:>9.1e}{r['triton_fwd_ms']:>9.3f}"
          f"{r['triton_fwdbwd_ms']:>9.3f}{r['torch_chunked_fwd_ms']:>10.3f}"
          f"{r['torch_chunked_fwdbwd_ms']:>10.3f}{mm}{loop}", flush=True)


def write_json(path: str, obj: dict) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=d, delete=False, suffix=".tmp") as f:
        json.dump(obj, f, indent=2)
    os.replace(f.name, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="results/bench/gpu_kernels.json")
    ap.add_argument("--quick", action="store_true", help="first shape of each kernel only")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (CPU: TRITON_INTERPRET=1)")
    ap.add_argument("--only", nargs="+", choices=("ema", "routing", "ssd"),
                    default=["ema", "routing", "ssd"], help="which kernels to run")
    args = ap.parse_args()
    if not triton_available():
        print("gpu_kernels: triton is not installed (pip install triton)", file=sys.stderr)
        return 1
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif args.smoke and interp:
        device = torch.device("cpu")
    else:
        print("gpu_kernels: no CUDA GPU visible (torch.cuda.is_available() is False); run this on "
              "a GPU machine (or --smoke with TRITON_INTERPRET=1 to check the script on CPU)",
              file=sys.stderr)
        return 1
    ema_shapes, route_shapes, tiles, reps = EMA_SHAPES, ROUTE_SHAPES, EMA_TILES, 20
    ssd_shapes = SSD_SHAPES
    dtypes = [torch.float32, torch.bfloat16]
    if args.quick:
        ema_shapes, route_shapes, ssd_shapes = EMA_SHAPES[:1], ROUTE_SHAPES[:1], SSD_SHAPES[:1]
    if args.smoke:
        ema_shapes, route_shapes, tiles, reps = [(2, 40, 6)], [(2, 20, 6)], [(16, 4), (32, 8)], 1
        ssd_shapes = [(2, 48, 2, 4, 8)]
        dtypes = [torch.float32]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (triton interpreter)"
    print(f"device: {name}, torch {torch.__version__}")
    print(HEADER)
    rows = []
    if "ema" in args.only:
        rows += bench_ema(ema_shapes, dtypes, tiles, device, reps, loop_max_m=4096)
    if "routing" in args.only:
        rows += bench_routing(route_shapes, dtypes, device, reps)
    if "ssd" in args.only:
        rows += bench_ssd(ssd_shapes, dtypes, device, reps)
    write_json(args.out, dict(device=name, torch=torch.__version__, smoke=args.smoke, rows=rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
