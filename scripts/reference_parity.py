"""Numerical parity of `hnetbench convert` against the reference H-Net code (goombalab/hnet).

Builds the reference's own HNetForCausalLM from a local checkout (nothing is downloaded or
vendored), converts its weights with hnetbench.models.convert, runs both models on the same
bytes and prints the largest logit difference and whether every stage's boundaries agree.

CPU (no CUDA): the reference's CUDA-only imports are stubbed: flash-attn's attention is replaced
by torch SDPA (causal, same sliding window), its Triton RMSNorm/rotary/SwiGLU by plain torch;
mamba_ssm's Mamba-2 is the real module from a mamba checkout (--mamba-repo, the commit hnet
pins), its fused path switched off (needs causal_conv1d) and its Triton SSD scan and gated norm
run under TRITON_INTERPRET=1, or with --scan torch as mamba_ssm's own torch references.
GPU: with mamba_ssm / flash_attn installed nothing is stubbed and --checkpoint/--config run the
released models (e.g. hnet_2stage_XL.pt + configs/hnet_2stage_XL.json).

  python scripts/reference_parity.py --hnet-repo /tmp/hnet --mamba-repo /tmp/mamba --dtype float64
  python scripts/reference_parity.py --hnet-repo ~/hnet --config configs/hnet_2stage_XL.json \
      --checkpoint hnet_2stage_XL.pt --device cuda --dtype bfloat16
  python scripts/reference_parity.py --hnet-repo /tmp/hnet --mamba-repo /tmp/mamba \\
      --write-keys tests/data/hnet_reference_keys.json   # regenerate the test fixture

The reference needs einops and optree importable (pip install --target DIR einops optree and put
DIR on PYTHONPATH; they are not hnetbench dependencies).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import types
from pathlib import Path

# a tiny 2-stage model with every kind of layer (m, M, T, t) and a width change at each stage
TINY_CONFIG = {
    "arch_layout": ["m1t1", ["T1m1", ["M1T1"], "m1T1"], "t1m1"],
    "d_model": [64, 64, 96],
    "d_intermediate": [0, 128, 200],
    "vocab_size": 256,
    "ssm_cfg": {"chunk_size": 16, "d_conv": 4, "d_state": 16, "expand": 2},
    "attn_cfg": {"num_heads": [4, 4, 4], "rotary_emb_dim": [8, 8, 12],
                 "window_size": [7, 15, -1]},
    "tie_embeddings": False,
}
SAMPLE = ("The H-Net learns where words start. Dynamic chunking groups bytes into units, "
          "then a main network models them! 12345 ?? ok")


# ----------------------------------------------------------------------------- weights


def synthetic_reference_state(keys_shapes: dict[str, list[int]], seed: int = 0) -> dict:
    """Seeded random weights for a reference-format state dict, scaled so that every path
    carries signal and the routers fire at varied rates (the test builds the same tensors)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(keys_shapes):
        if ".rotary_emb." in key:  # buffers the model computes itself
            continue
        shape = tuple(keys_shapes[key])
        r = torch.randn(shape, generator=g, dtype=torch.float64)
        if key.endswith("A_log"):
            t = torch.log(1 + 15 * torch.rand(shape, generator=g, dtype=torch.float64))
        elif key.endswith("dt_bias"):
            t = r * 0.5 - 2.0
        elif key.endswith(".D") or (len(shape) == 1 and "norm" in key):
            t = 1 + 0.1 * r
        elif "routing_module" in key:  # near identity: boundaries neither always nor never
            t = torch.eye(shape[0], dtype=torch.float64) + 0.4 * r / math.sqrt(shape[1])
        elif key == "embeddings.weight":
            t = r
        elif "residual_proj" in key or key.endswith("pad_dimension"):
            t = 0.3 * r / (math.sqrt(shape[-1]) if len(shape) == 2 else 1)
        elif key.endswith("conv1d.weight"):
            t = 0.5 * r
        elif len(shape) == 2:
            t = r / math.sqrt(shape[1])
        else:
            t = 0.1 * r
        out[key] = t.to(torch.float32)
    return out


# ----------------------------------------------------------------------------- the reference


def _unavailable(name: str):  # noqa: ANN202
    def fn(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise NotImplementedError(f"flash_attn.{name} is stubbed on CPU (SDPA replaces it)")

    return fn


def _stub_flash_attn() -> None:
    """flash_attn's pieces the reference imports, as plain torch (CPU only)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def mod(name: str) -> types.ModuleType:
        m = types.ModuleType(name)
        sys.modules[name] = m
        return m

    fa = mod("flash_attn")
    for fn in ("flash_attn_kvpacked_func", "flash_attn_qkvpacked_func",
               "flash_attn_varlen_kvpacked_func", "flash_attn_varlen_qkvpacked_func",
               "flash_attn_with_kvcache"):
        setattr(fa, fn, _unavailable(fn))
    mod("flash_attn.ops")
    mod("flash_attn.ops.triton")
    mod("flash_attn.utils")

    class RMSNorm(nn.Module):  # flash_attn.ops.triton.layer_norm.RMSNorm's contract
        def __init__(self, hidden_size, eps=1e-5, device=None, dtype=None, **_):  # noqa: ANN001
            super().__init__()
            self.eps = eps
            self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))

        def forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):  # noqa: ANN001, ANN201
            if residual is not None:
                x = x + residual
            res = x.float() if residual_in_fp32 and x.dtype != torch.float64 else x
            w = self.weight
            wide = torch.promote_types(x.dtype, torch.float32)
            y = F.rms_norm(x.to(wide), (x.shape[-1],), w.to(wide), self.eps).to(w.dtype)
            return (y, res) if prenorm else y

    mod("flash_attn.ops.triton.layer_norm").RMSNorm = RMSNorm

    def apply_rotary(x, cos, sin, seqlen_offsets=0, cu_seqlens=None, max_seqlen=None,  # noqa: ANN001, ANN202
                     interleaved=False, inplace=False, conjugate=False):
        assert not interleaved
        rd = cos.shape[-1] * 2
        if cu_seqlens is not None:  # (total, H, D): positions restart at every sequence
            idx = torch.arange(x.shape[0], device=x.device)
            seq = torch.searchsorted(cu_seqlens[1:].long(), idx, right=True)
            pos = idx - cu_seqlens.long()[seq] + seqlen_offsets
            c, s = cos[pos][:, None], sin[pos][:, None]
        else:  # (B, L, H, D)
            L = x.shape[1]
            c = cos[seqlen_offsets:seqlen_offsets + L][None, :, None]
            s = sin[seqlen_offsets:seqlen_offsets + L][None, :, None]
        if conjugate:
            s = -s
        x1, x2 = x[..., : rd // 2], x[..., rd // 2: rd]
        c, s = c.to(x.dtype), s.to(x.dtype)
        out = torch.cat([x1 * c - x2 * s, x1 * s + x2 * c, x[..., rd:]], dim=-1)
        if inplace:
            x.copy_(out)
            return x
        return out

    mod("flash_attn.ops.triton.rotary").apply_rotary = apply_rotary
    mod("flash_attn.ops.activations").swiglu = lambda gate, y: F.silu(gate) * y

    class GenerationMixin:
        pass

    mod("flash_attn.utils.generation").GenerationMixin = GenerationMixin


def sdpa_attention(window: int):  # noqa: ANN201
    """A module standing in for the reference's FlashCausalSelfAttention: causal, flash-attn's
    window_size=(w, -1) (keys i-w..i), packed (cu_seqlens) or batched qkv, via torch SDPA."""
    import torch
    import torch.nn.functional as F

    class SDPACausal(torch.nn.Module):
        def forward(self, qkv, cu_seqlens=None, max_seqlen=None, **_):  # noqa: ANN001, ANN202
            if cu_seqlens is not None:
                bounds = zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())
                return torch.cat([self(qkv[None, a:b])[0] for a, b in bounds], 0)
            q, k, v = qkv.unbind(2)  # (B, L, H, D)
            i = torch.arange(qkv.shape[1], device=qkv.device)
            diff = i[:, None] - i[None, :]
            mask = (diff >= 0) & ((diff <= window) if window >= 0 else True)
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), attn_mask=mask)
            return y.transpose(1, 2)

    return SDPACausal()


def import_reference(hnet_repo: str, mamba_repo: str | None, scan: str,  # noqa: ANN201
                     one_config: bool = False):
    """The reference's HNetForCausalLM class (and its config classes), stubbing what needs
    CUDA when mamba_ssm / flash_attn do not import."""
    sys.path.insert(0, str(Path(hnet_repo).resolve()))
    try:
        import flash_attn  # noqa: F401
    except Exception:  # noqa: BLE001
        _stub_flash_attn()
    try:
        import mamba_ssm  # noqa: F401
    except Exception:  # noqa: BLE001
        if not mamba_repo:
            raise SystemExit("mamba_ssm does not import: pass --mamba-repo (a state-spaces/mamba "
                             "checkout, e.g. at a6a1dae, the commit hnet pins)") from None
        for k in [k for k in sys.modules if k == "mamba_ssm" or k.startswith("mamba_ssm.")]:
            del sys.modules[k]
        pkg = types.ModuleType("mamba_ssm")  # a shell: its __init__ imports CUDA extensions
        pkg.__path__ = [str(Path(mamba_repo).resolve() / "mamba_ssm")]
        sys.modules["mamba_ssm"] = pkg
    import torch

    if not torch.cuda.is_available():  # the Triton launchers enter torch.cuda.device(index)
        import contextlib

        torch.cuda.device = lambda *_a, **_k: contextlib.nullcontext()
        _one_config_autotune()
    elif one_config:
        _one_config_autotune(smallest=True)
    if scan == "torch":
        _torch_scan()
    from hnet.models.config_hnet import AttnConfig, HNetConfig, SSMConfig
    from hnet.models.mixer_seq import HNetForCausalLM

    return HNetForCausalLM, HNetConfig, AttnConfig, SSMConfig


def _one_config_autotune(smallest: bool = False) -> None:
    """Every autotuned mamba_ssm kernel keeps one config (results do not depend on it): the
    Triton interpreter has no benchmarker (first config), and on a GPU autotuning every kernel
    for each new shape costs minutes (`smallest`: least tiles x stages, since some first
    configs ask more shared memory than an H200 has)."""
    import importlib

    from triton.runtime.autotuner import Autotuner

    for name in ("ssd_bmm", "ssd_chunk_state", "ssd_state_passing", "ssd_chunk_scan",
                 "ssd_combined", "layernorm_gated", "selective_state_update"):
        try:
            mod = importlib.import_module(f"mamba_ssm.ops.triton.{name}")
        except ImportError:
            continue
        for obj in vars(mod).values():
            if isinstance(obj, Autotuner):
                obj.configs = [min(obj.configs, key=_config_size) if smallest
                               else obj.configs[0]]


def _config_size(cfg) -> int:  # noqa: ANN001 - a triton.Config
    size = max(1, cfg.num_stages or 1)
    for v in cfg.kwargs.values():
        size *= v if isinstance(v, int) and v > 0 else 1
    return size


def _torch_scan() -> None:
    """mamba_ssm's own torch references in place of its Triton SSD scan and gated norm."""
    import mamba_ssm.modules.mamba2 as m2
    import mamba_ssm.ops.triton.layernorm_gated as lg
    import torch
    from hnet.modules import dc
    from mamba_ssm.ops.triton.ssd_combined import ssd_chunk_scan_combined_ref

    def scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, seq_idx=None,  # noqa: ANN001, ANN202
             dt_softplus=False, **_):
        assert seq_idx is None, "the torch reference scan has no seq_idx (use mask mode)"
        L, pad = x.shape[1], -x.shape[1] % chunk_size  # it wants whole chunks: pad the end
        if pad:  # causal, so the padded tail changes nothing before it

            def grow(t):  # noqa: ANN001, ANN202
                return None if t is None else torch.cat(
                    [t, t.new_zeros(t.shape[0], pad, *t.shape[2:])], 1)

            x, dt, B, C, z = grow(x), grow(dt), grow(B), grow(C), grow(z)
        y = ssd_chunk_scan_combined_ref(x, dt, A, B, C, chunk_size, D=D, z=z,
                                        dt_bias=dt_bias, dt_softplus=dt_softplus)
        return y[:, :L]

    m2.mamba_chunk_scan_combined = scan
    dc.mamba_chunk_scan_combined = scan

    def norm_forward(self, x, z=None):  # noqa: ANN001, ANN202
        return lg.rms_norm_ref(x, self.weight, self.bias, z=z, eps=self.eps,
                               group_size=self.group_size,
                               norm_before_gate=self.norm_before_gate)

    lg.RMSNorm.forward = norm_forward


def build_reference(classes, cfg: dict, device: str, dtype):  # noqa: ANN001, ANN201
    import torch

    HNetForCausalLM, HNetConfig, AttnConfig, SSMConfig = classes
    cfg = json.loads(json.dumps(cfg))
    hcfg = HNetConfig(**{k: v for k, v in cfg.items() if k not in ("attn_cfg", "ssm_cfg")},
                      attn_cfg=AttnConfig(**cfg.get("attn_cfg", {})),
                      ssm_cfg=SSMConfig(**cfg.get("ssm_cfg", {})))
    model = HNetForCausalLM(hcfg, device=device, dtype=torch.float32)
    for m in model.modules():
        name = type(m).__name__
        if name in ("Mamba2", "Mamba2Wrapper"):
            m.use_mem_eff_path = False  # the fused path needs causal_conv1d
        if name == "CausalMHA" and (device == "cpu" or dtype in (torch.float32, torch.float64)):
            m.inner_attn = sdpa_attention(m.window_size)
        if name == "DeChunkLayer":
            m.dtype = dtype  # the reference runs its EMA scan in bf16 by default
    return model.to(dtype).eval()


def reference_keys(model) -> dict[str, list[int]]:  # noqa: ANN001
    return {k: list(v.shape) for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- parity


def parity(classes, cfg: dict, state: dict, device: str, dtype_name: str) -> dict:  # noqa: ANN001
    import torch
    from hnetbench.models import build_model, mamba2
    from hnetbench.models.convert import (
        OUR_BOS,
        REF_BOS,
        convert_state_dict,
        load_into,
        model_config_from_reference,
    )

    dtype = getattr(torch, dtype_name)
    ref = build_reference(classes, cfg, device, dtype)
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary_emb" in k for k in missing), (missing, unexpected)
    ref = ref.to(dtype)
    ours_cfg = model_config_from_reference(cfg)
    ours = build_model(ours_cfg)
    load_into(ours, convert_state_dict(state, ours_cfg), "reference weights")
    ours = ours.to(device=device, dtype=dtype).eval()

    ids_ref, ids_ours = sample_ids(REF_BOS, device), sample_ids(OUR_BOS, device)
    with torch.no_grad():
        r = ref(ids_ref, mask=torch.ones_like(ids_ref, dtype=torch.bool))
        o = ours(ids_ours)
    lr, lo = r.logits.double(), o.logits[..., :256].double()
    fast = mamba2.mamba_chunk_scan_combined is not None and device != "cpu"
    report = {"dtype": dtype_name, "device": device, "positions": int(ids_ref.numel()),
              "our_scan": "mamba_ssm" if fast else "torch",
              "max_abs_logit_diff": float((lr - lo).abs().max()),
              "max_abs_logprob_diff": float((lr.log_softmax(-1) - lo.log_softmax(-1)).abs().max()),
              "logit_scale": float(lr.abs().max())}
    if fast:  # ours once more with our own torch scan (the CPU default) in place of mamba_ssm's
        saved, mamba2.mamba_chunk_scan_combined = mamba2.mamba_chunk_scan_combined, None
        try:
            with torch.no_grad():
                o2 = ours(ids_ours)
        finally:
            mamba2.mamba_chunk_scan_combined = saved
        lo2 = o2.logits[..., :256].double()
        report["torch_scan_max_abs_logit_diff"] = float((lr - lo2).abs().max())
        report["torch_scan_boundaries_equal"] = all(
            a.shape == b.shape and bool((a == b).all())
            for a, b in zip(o.boundaries, o2.boundaries))
    stages = []
    for s, (bp, b_ours) in enumerate(zip(r.bpred_output, o.boundaries)):
        b_ref = bp.boundary_mask
        n = b_ref.shape[1]
        valid = torch.ones_like(b_ref)
        if s > 0:  # compare the valid prefix of each row (chunk counts differ per row)
            n_prev = r.bpred_output[s - 1].boundary_mask.sum(1)
            valid = torch.arange(n, device=device)[None] < n_prev[:, None]
        same = bool(((b_ref == b_ours[:, :n]) | ~valid).all())
        p_ref = bp.boundary_prob[..., 1]
        stages.append({"stage": s, "boundaries_equal": same,
                       "boundary_rate": float(b_ref[valid].float().mean()),
                       "min_margin_to_0.5": float((p_ref[valid] - 0.5).abs().min())})
    report["stages"] = stages
    return report


def sample_ids(bos: int, device: str = "cpu"):  # noqa: ANN201
    import torch

    data = list(SAMPLE.encode())
    return torch.tensor([[bos] + data[:96], [bos] + data[20:116]], device=device)


def reference_outputs(classes, scan: str) -> dict:  # noqa: ANN001
    """The reference's float64 forward on the tiny synthetic checkpoint: log-probability of each
    next byte and every stage's boundaries (the test compares our converted model to these)."""
    import torch

    with torch.device("meta"):
        keys = reference_keys(build_reference(classes, TINY_CONFIG, "meta", torch.float32))
    ref = build_reference(classes, TINY_CONFIG, "cpu", torch.float64)
    ref.load_state_dict(synthetic_reference_state(keys), strict=False)
    ref = ref.to(torch.float64)
    ids = sample_ids(254)
    with torch.no_grad():
        out = ref(ids, mask=torch.ones_like(ids, dtype=torch.bool))
    logp = out.logits.log_softmax(-1)[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    return {"dtype": "float64", "scan": scan, "ids": ids.tolist(),
            "next_byte_logprob": logp.tolist(),
            "boundaries": [bp.boundary_mask.tolist() for bp in out.bpred_output]}


def _fixture_text(fixture: dict) -> str:
    """One key per line (reviewable diffs), everything else compact."""
    lines = ["{", f'"_how": {json.dumps(fixture["_how"])},', '"configs": {']
    names = list(fixture["configs"])
    for i, name in enumerate(names):
        entry = fixture["configs"][name]
        lines.append(f'{json.dumps(name)}: {{"config": {json.dumps(entry["config"])}, "keys": {{')
        keys = list(entry["keys"].items())
        for j, (k, shape) in enumerate(keys):
            sep = "," if j < len(keys) - 1 else ""
            lines.append(f"{json.dumps(k)}: {json.dumps(shape)}{sep}")
        lines.append("}}" + ("," if i < len(names) - 1 else ""))
    lines.append("},")
    outputs = json.dumps(fixture["tiny_reference_outputs"])
    lines += [f'"tiny_reference_outputs": {outputs}', "}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hnet-repo", required=True, help="a local goombalab/hnet checkout")
    ap.add_argument("--mamba-repo", default=None, help="a local state-spaces/mamba checkout "
                    "(only when mamba_ssm does not import)")
    ap.add_argument("--config", default=None, help="reference config JSON (default: a tiny one)")
    ap.add_argument("--checkpoint", default=None, help="reference weights (.pt or .safetensors); "
                    "default: seeded random weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16"))
    ap.add_argument("--scan", default="triton", choices=("triton", "torch"),
                    help="CPU: the reference's Triton kernels under TRITON_INTERPRET=1, or "
                         "mamba_ssm's torch references")
    ap.add_argument("--one-config", action="store_true",
                    help="GPU: skip mamba_ssm's autotuning (smallest config of each kernel)")
    ap.add_argument("--write-keys", default=None,
                    help="write the key/shape fixture for the tiny and released configs")
    args = ap.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    torch.manual_seed(0)
    classes = import_reference(args.hnet_repo, args.mamba_repo, args.scan, args.one_config)
    if args.write_keys:
        fixture = {"_how": "python scripts/reference_parity.py --hnet-repo HNET --mamba-repo "
                           "MAMBA --write-keys PATH (goombalab/hnet HEAD, mamba a6a1dae)",
                   "configs": {}}
        cfgs = {"tiny": TINY_CONFIG}
        for p in sorted((Path(args.hnet_repo) / "configs").glob("*.json")):
            cfgs[p.stem] = json.loads(p.read_text())
        for name, cfg in cfgs.items():
            with torch.device("meta"):
                m = build_reference(classes, cfg, "meta", torch.float32)
            fixture["configs"][name] = {"config": cfg, "keys": reference_keys(m)}
        fixture["tiny_reference_outputs"] = reference_outputs(classes, args.scan)
        Path(args.write_keys).write_text(_fixture_text(fixture))
        print(f"wrote {args.write_keys}: {', '.join(cfgs)}")
        return 0
    cfg = json.loads(Path(args.config).read_text()) if args.config else TINY_CONFIG
    if args.checkpoint:
        from hnetbench.models.convert import load_reference_weights

        state = load_reference_weights(args.checkpoint)
    else:
        with torch.device("meta"):
            m = build_reference(classes, cfg, "meta", torch.float32)
        state = synthetic_reference_state(reference_keys(m))
    report = parity(classes, cfg, state, args.device, args.dtype)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
