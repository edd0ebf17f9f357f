"""Causal multi-head attention with partial RoPE, sliding window and document masking.

The mask is causal AND same-document AND within-window (`window` = positions attended,
including the current one; -1 = global), so each query attends one contiguous range of keys.
On CPU (float32 and float64) q, k, v come out of the fused projection with their RoPE in one C
pass (`kernels/rope_cpu.c`, the same bits as `rope` after a permute), and attention itself is
a C pass over those ranges (`kernels/attn_cpu.c`); the reference path (and any other device or
dtype) is torch SDPA with the boolean mask; on CUDA flash-attn's varlen kernel is used when it
imports.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from hnetbench.kernels import attn_cpu, cpu_build, rope_cpu
from hnetbench.models.seqinfo import Extension, Seq, Step

try:  # optional fast path, CUDA only
    from flash_attn import flash_attn_varlen_func
except Exception:  # noqa: BLE001 - any import failure means "not available"
    flash_attn_varlen_func = None


def rope_angles(
    pos: torch.Tensor, rotary_dim: int, dtype: torch.dtype, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (B, L, rotary_dim // 2) of the rotation angles at positions pos (B, L)."""
    # fp32 and the reference's exact formula (flash-attn's RotaryEmbedding), so that angles
    # agree bit for bit with converted goombalab/hnet models
    steps = torch.arange(0, rotary_dim, 2, device=pos.device, dtype=torch.float32)
    inv_freq = 1.0 / (base ** (steps / rotary_dim))
    ang = pos.float()[:, :, None] * inv_freq
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rope(
    x: torch.Tensor, pos: torch.Tensor, rotary_dim: int, base: float = 10000.0
) -> torch.Tensor:
    """Rotate the first `rotary_dim` dims of each head. x: (B, H, L, hd), pos: (B, L)."""
    if rotary_dim == 0:
        return x
    half = rotary_dim // 2
    cos, sin = (t[:, None] for t in rope_angles(pos, rotary_dim, x.dtype, base))  # (B,1,L,half)
    x1, x2, rest = x[..., :half], x[..., half:rotary_dim], x[..., rotary_dim:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int, rotary_dim: int, window: int = -1) -> None:
        super().__init__()
        if d % n_heads:
            raise ValueError(f"attention: d_model {d} not divisible by {n_heads} heads")
        self.n_heads, self.head_dim = n_heads, d // n_heads
        if rotary_dim % 2 or rotary_dim > self.head_dim:
            raise ValueError(
                f"attention: rotary dim {rotary_dim} must be even and <= head dim {self.head_dim}"
            )
        self.rotary_dim, self.window = rotary_dim, window
        self.wqkv = nn.Linear(d, 3 * d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)
        self.out_proj._residual_out = True

    def _qkv(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k, v (B, H, L, hd), RoPE on q and k: one C pass on CPU, else `_qkv_torch`."""
        qkv = self.wqkv(x).unflatten(-1, (3, self.n_heads, self.head_dim))
        if self.rotary_dim and cpu_build.handles(qkv) and rope_cpu.available():
            cos, sin = rope_angles(pos, self.rotary_dim, qkv.dtype)
            return rope_cpu.qkv_rope_cpu(qkv, cos, sin, self.rotary_dim)
        return self._qkv_torch(x, pos, qkv)

    def _qkv_torch(self, x: torch.Tensor, pos: torch.Tensor,
                   qkv: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The torch version of `_qkv` (permute, then `rope` on q and k); `qkv` = the projection
        of x when the caller has it already."""
        if qkv is None:
            qkv = self.wqkv(x).unflatten(-1, (3, self.n_heads, self.head_dim))
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        return rope(q, pos, self.rotary_dim), rope(k, pos, self.rotary_dim), v

    def _mask(self, q_idx: torch.Tensor, k_idx: torch.Tensor) -> torch.Tensor:
        """Causal and within-window part of the mask for query/key slot indices."""
        diff = q_idx[..., :, None] - k_idx[..., None, :]
        ok = diff >= 0
        if self.window > 0:
            ok = ok & (diff < self.window)
        return ok

    def forward(self, x: torch.Tensor, seq: Seq, collect: list | None = None) -> torch.Tensor:
        B, L, _ = x.shape
        q, k, v = self._qkv(x, seq.pos)
        if (
            flash_attn_varlen_func is not None
            and x.is_cuda
            and q.dtype in (torch.float16, torch.bfloat16)
        ):
            y = self._flash(q, k, v, seq)
        elif cpu_build.handles(q) and attn_cpu.available():
            y = attn_cpu.attention_cpu(q, k, v, attn_cpu.key_start(seq.doc, self.window))
        else:
            y = self._sdpa(q, k, v, seq)
        if collect is not None:
            collect.append(self._prefill_cache(k, v, seq))
        return self.out_proj(y.reshape(B, L, -1))

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq: Seq) -> torch.Tensor:
        """torch SDPA with the full (B, L, L) mask; y (B, L, H, hd)."""
        idx = torch.arange(q.shape[2], device=q.device)
        mask = self._mask(idx, idx)[None] & (seq.doc[:, :, None] == seq.doc[:, None, :])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None]).transpose(1, 2)

    def _flash(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq: Seq) -> torch.Tensor:
        # every (row, document) pair is one varlen sequence
        B, H, L, hd = q.shape
        flat = (seq.doc + torch.arange(B, device=q.device)[:, None] * (L + 1)).flatten()
        starts = torch.ones_like(flat, dtype=torch.bool)
        starts[1:] = flat[1:] != flat[:-1]
        cu = F.pad(torch.nonzero(starts).flatten(), (0, 1), value=B * L).to(torch.int32)
        maxlen = int((cu[1:] - cu[:-1]).max())
        win = (self.window - 1, 0) if self.window > 0 else (-1, -1)
        pack = lambda t: t.transpose(1, 2).reshape(B * L, H, hd)  # noqa: E731
        y = flash_attn_varlen_func(
            pack(q), pack(k), pack(v), cu, cu, maxlen, maxlen, causal=True, window_size=win
        )
        return y.view(B, L, H, hd)

    # ------------------------------------------------------------------ cached generation

    def _prefill_cache(self, k: torch.Tensor, v: torch.Tensor, seq: Seq) -> dict:
        B, H, L, hd = k.shape
        cap = max(seq.capacity, L)
        cache = {
            "k": k.new_zeros(B, H, cap, hd),
            "v": v.new_zeros(B, H, cap, hd),
            "doc": torch.full((B, cap), -1, dtype=torch.long, device=k.device),
        }
        cache["k"][:, :, :L], cache["v"][:, :, :L], cache["doc"][:, :L] = k, v, seq.doc
        return cache

    def step(self, x: torch.Tensor, st: Step, cache: dict) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = self._qkv(x, st.pos[:, None])
        cap = cache["k"].shape[2]
        if int(st.idx.max()) >= cap:  # grow: double the reserved slots
            for name in ("k", "v"):
                cache[name] = torch.cat([cache[name], torch.zeros_like(cache[name])], dim=2)
            cache["doc"] = torch.cat([cache["doc"], torch.full_like(cache["doc"], -1)], dim=1)
            cap *= 2
        r = st.rows
        cache["k"][r, :, st.idx] = k[:, :, 0]
        cache["v"][r, :, st.idx] = v[:, :, 0]
        cache["doc"][r, st.idx] = st.doc
        slots = torch.arange(cap, device=x.device)
        mask = self._mask(st.idx[:, None], slots)[:, 0] & (cache["doc"][r] == st.doc[:, None])
        y = F.scaled_dot_product_attention(
            q, cache["k"][r], cache["v"][r], attn_mask=mask[:, None, None]
        )
        return self.out_proj(y.transpose(1, 2).reshape(n, 1, -1))

    def extend(self, x: torch.Tensor, ext: Extension, cache: dict) -> torch.Tensor:
        """x (n, L, d): L new positions after the cached rows `ext.rows` (read-only). Keys are
        the row's cached slots before the extension (same document, within the window) and the
        new positions (causal); torch SDPA with that mask. When each cached row is continued
        `ext.repeat` times, its continuations run as one row of repeat x L queries against the
        cached keys once, each continuation seeing only its own new keys."""
        n, L, _ = x.shape
        q, k, v = self._qkv(x, ext.pos)  # (n, H, L, hd)
        c = ext.repeat or 1
        rows, slot, doc = ext.rows[::c], ext.slot[::c], ext.doc[::c]  # one per cached row
        kc, vc, docc = (cache[name].index_select(0, rows) for name in ("k", "v", "doc"))
        slots = torch.arange(kc.shape[2], device=x.device)
        old = ((slots[None, None, :] < slot[:, :1, None])  # slots from `slot` on: stale
               & (docc[:, None, :] == doc[:, :, None])
               & self._mask(slot, slots))  # (m, L, slots)
        if c > 1:  # (n, H, L, hd) -> (m, H, c L, hd): continuation j's position i at j L + i
            q, k, v = (t.unflatten(0, (-1, c)).transpose(1, 2).flatten(2, 3) for t in (q, k, v))
            own = torch.arange(c, device=x.device).repeat_interleave(L)
            old, slot = old.repeat(1, c, 1), slot.repeat(1, c)
            new = self._mask(slot, slot) & (own[:, None] == own[None, :])
        else:
            new = self._mask(slot, slot)
        y = F.scaled_dot_product_attention(q, torch.cat([kc, k], 2), torch.cat([vc, v], 2),
                                           attn_mask=torch.cat([old, new], dim=-1)[:, None])
        if c > 1:  # back to (n, L, H, hd)
            return self.out_proj(y.unflatten(2, (c, L)).permute(0, 2, 3, 1, 4).reshape(n, L, -1))
        return self.out_proj(y.transpose(1, 2).reshape(n, L, -1))
