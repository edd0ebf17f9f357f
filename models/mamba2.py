"""Mamba-2 mixer with a plain-torch SSD chunked scan, document resets and a step function.

SSM per head h (scalar decay): state_t = exp(dt_t A_h) state_{t-1} + dt_t x_t B_t^T,
y_t = state_t C_t + D_h x_t. A document start resets the state (and the conv window), so no
information crosses it. `ssd_naive` is the sequential ground truth for `ssd_chunked`, which is
kept as the reference for the faster CPU default, `models.ssd.ssd_scan`.
On CUDA, mamba_ssm's fused scan is used when it imports (training forward only).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from hnetbench.models.doc_conv import doc_conv
from hnetbench.models.norm import GatedRMSNorm
from hnetbench.models.seqinfo import Extension, Seq, Step
from hnetbench.models.ssd import ssd_scan

try:  # optional fast path, CUDA only
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
except Exception:  # noqa: BLE001 - any import failure means "not available"
    mamba_chunk_scan_combined = None


def ssd_naive(x, dt, A, B, C, doc_start=None):  # noqa: ANN001, ANN201 - test reference
    """Sequential recurrence. x (b,L,H,P), dt (b,L,H), A (H,), B/C (b,L,G,N), doc_start (b,L)."""
    b, L, H, P = x.shape
    rep = H // B.shape[2]
    Bh, Ch = B.repeat_interleave(rep, dim=2), C.repeat_interleave(rep, dim=2)
    state = x.new_zeros(b, H, P, B.shape[-1])
    ys = []
    for t in range(L):
        decay = torch.exp(dt[:, t] * A)  # (b, H)
        if doc_start is not None:
            decay = decay * (~doc_start[:, t]).to(x.dtype)[:, None]
        state = decay[..., None, None] * state + torch.einsum(
            "bh,bhp,bhn->bhpn", dt[:, t], x[:, t], Bh[:, t]
        )
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))
    return torch.stack(ys, 1), state


def ssd_chunked(x, dt, A, B, C, chunk: int, doc=None):  # noqa: ANN001, ANN201
    """Chunked SSD scan (same contract as ssd_naive; `doc` = (b,L) nondecreasing document ids).

    Within a chunk: a masked quadratic form; across chunks: a short loop carrying the state.
    Returns (y (b,L,H,P), final state (b,H,P,N)).
    """
    b, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    if doc is None:
        doc = torch.zeros(b, L, dtype=torch.long, device=x.device)
    pad = (-L) % chunk
    if pad:  # zero dt adds nothing and decays nothing; padding continues the last document
        x, dt = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(dt, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, 0, 0, pad)), F.pad(C, (0, 0, 0, 0, 0, pad))
        doc = torch.cat([doc, doc[:, -1:].expand(b, pad)], dim=1)
    nc, Q = (L + pad) // chunk, chunk
    x, dt, doc = x.view(b, nc, Q, H, P), dt.view(b, nc, Q, H), doc.view(b, nc, Q)
    B = B.view(b, nc, Q, G, N).repeat_interleave(H // G, dim=3)
    C = C.view(b, nc, Q, G, N).repeat_interleave(H // G, dim=3)
    cs = torch.cumsum(dt * A, dim=2)  # (b, nc, Q, H) log-decay from chunk start
    xdt = x * dt[..., None]

    # 1) inside each chunk
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    keep = causal & (doc[:, :, :, None] == doc[:, :, None, :])  # (b, nc, i, j)
    seg = cs[:, :, :, None, :] - cs[:, :, None, :, :]  # (b, nc, i, j, H)
    Lmat = torch.exp(seg.masked_fill(~keep[..., None], float("-inf")))
    scores = torch.einsum("bcihn,bcjhn->bcijh", C, B) * Lmat
    y = torch.einsum("bcijh,bcjhp->bcihp", scores, xdt)

    # 2) each chunk's own end state (only its last document's positions count)
    last = doc[:, :, -1]  # (b, nc)
    w = torch.exp(cs[:, :, -1:, :] - cs) * (doc == last[..., None])[..., None].to(x.dtype)
    states = torch.einsum("bcjhn,bcjh,bcjhp->bchpn", B, w, xdt)

    # 3) carry states across chunks; a reset inside a chunk cuts the carried state
    S = x.new_zeros(b, H, P, N)
    prev_last = torch.full_like(last[:, 0], -1)
    y_off = []
    for c in range(nc):
        enter = (doc[:, c] == prev_last[:, None]).to(x.dtype)  # (b, Q)
        gain = torch.exp(cs[:, c]) * enter[..., None]  # (b, Q, H)
        y_off.append(torch.einsum("bihn,bhpn->bihp", C[:, c], S) * gain[..., None])
        cont = (last[:, c] == prev_last).to(x.dtype)[:, None]  # (b, 1)
        S = S * (torch.exp(cs[:, c, -1]) * cont)[..., None, None] + states[:, c]
        prev_last = last[:, c]
    y = y + torch.stack(y_off, dim=1)
    return y.reshape(b, nc * Q, H, P)[:, :L], S


class Mamba2(nn.Module):
    def __init__(
        self,
        d: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 256,
    ) -> None:
        super().__init__()
        d_inner = expand * d
        if d_inner % headdim:
            raise ValueError(
                f"mamba2: expand*d_model = {d_inner} not divisible by headdim {headdim}"
            )
        self.nheads = d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"mamba2: {self.nheads} heads not divisible by ngroups {ngroups}")
        self.d_inner, self.d_state, self.ngroups, self.headdim = d_inner, d_state, ngroups, headdim
        self.d_conv, self.chunk_size = d_conv, chunk_size
        self.conv_dim = d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d, 2 * d_inner + 2 * ngroups * d_state + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim)
        # dt log-uniform in [1e-3, 1e-1] through the inverse softplus of its bias; A in [1, 16].
        # A meta build (a parameter count) has no values to compute, and on meta each op runs a
        # Python decomposition (the first one imports torch._dynamo: ~2 s).
        if self.in_proj.weight.is_meta:
            self.dt_bias = nn.Parameter(torch.empty(self.nheads))
            self.A_log = nn.Parameter(torch.empty(self.nheads))
        else:
            dt = torch.exp(torch.rand(self.nheads) * (math.log(0.1) - math.log(1e-3))
                           + math.log(1e-3))
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
            self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = GatedRMSNorm(d_inner, d_inner // ngroups)
        self.out_proj = nn.Linear(d_inner, d, bias=False)
        self.out_proj._residual_out = True

    def _split(self, zxbcdt: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def _ssm_inputs(self, xBC: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, B, C = torch.split(
            xBC, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1
        )
        shape = xBC.shape[:-1]
        x = x.reshape(*shape, self.nheads, self.headdim)
        B = B.reshape(*shape, self.ngroups, self.d_state)
        C = C.reshape(*shape, self.ngroups, self.d_state)
        return x, B, C, F.softplus(dt + self.dt_bias)

    def _project(self, u: torch.Tensor, doc: torch.Tensor,
                 hist: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """in_proj and the conv, for a whole sequence: (z, x (b,L,d_inner) contiguous, BC
        (b,L,2GN), dt before softplus, the raw conv inputs (x, BC)). One projection per
        part (row slices of in_proj's weight) and one conv for x, one for B|C, instead of one
        of each split afterwards: the backward of a split concatenates full-width gradients,
        and the scan's products are several times faster over a contiguous x than over a view
        into a wider tensor. `hist` (b, d_conv-1, conv_dim): raw conv inputs before u, of u's
        document (the conv windows start with them; `doc` then covers hist and u)."""
        W, w, bias = self.in_proj.weight, self.conv1d.weight[:, 0, :], self.conv1d.bias
        di, nbc = self.d_inner, 2 * self.ngroups * self.d_state
        z = F.linear(u, W[:di])
        x_raw = F.linear(u, W[di:2 * di])
        bc_raw = F.linear(u, W[2 * di:2 * di + nbc])
        dt = F.linear(u, W[2 * di + nbc:])
        if hist is None:
            x = doc_conv(x_raw, w[:di], bias[:di], doc, silu=True)
            bc = doc_conv(bc_raw, w[di:], bias[di:], doc, silu=True)
        else:  # the outputs of u's positions only
            K1 = hist.shape[1]
            x = doc_conv(torch.cat([hist[..., :di], x_raw], 1), w[:di], bias[:di], doc,
                         silu=True)[:, K1:]
            bc = doc_conv(torch.cat([hist[..., di:], bc_raw], 1), w[di:], bias[di:], doc,
                          silu=True)[:, K1:]
        return z, x, bc, dt, (x_raw, bc_raw)

    def forward(self, u: torch.Tensor, seq: Seq, collect: list | None = None) -> torch.Tensor:
        b, L, _ = u.shape
        z, x, bc, dt, raw = self._project(u, seq.doc)
        B, C = bc.unflatten(-1, (2, self.ngroups, self.d_state)).unbind(2)
        x = x.unflatten(-1, (self.nheads, self.headdim))
        dt = F.softplus(dt + self.dt_bias)
        valid = seq.valid()
        if valid is not None:  # padded tail positions neither add to nor decay the state
            dt = dt * valid[..., None].to(dt.dtype)
        wide = torch.promote_types(x.dtype, torch.float32)  # scan in fp32 at least (bf16 weights)
        A, D = -torch.exp(self.A_log.to(wide)), self.D.to(wide)
        if mamba_chunk_scan_combined is not None and u.is_cuda and collect is None:
            y = mamba_chunk_scan_combined(x, dt, A, B, C, self.chunk_size, seq_idx=seq.doc.int())
            y = torch.addcmul(y, x.to(wide), D[:, None])
        else:  # y + D x: the C scan adds the skip in its own pass
            y, state = ssd_scan(x.to(wide), dt.to(wide), A, B.to(wide), C.to(wide),
                                self.chunk_size, seq.doc, D)
        y = y.to(x.dtype)
        if collect is not None:
            collect.append({"conv": self._prefill_conv(torch.cat(raw, -1), seq), "ssm": state})
        y = self.norm(y.reshape(b, L, self.d_inner), z)
        return self.out_proj(y)

    # ------------------------------------------------------------------ cached generation

    def _prefill_conv(self, xBC_raw: torch.Tensor, seq: Seq) -> torch.Tensor:
        """The last d_conv-1 raw conv inputs of each row's valid prefix (same document only)."""
        b, L, _ = xBC_raw.shape
        end = seq.lengths if seq.lengths is not None else torch.full((b,), L, device=xBC_raw.device)
        idx = end[:, None] - (self.d_conv - 1) + torch.arange(self.d_conv - 1, device=end.device)
        last_doc = seq.doc.gather(1, (end - 1)[:, None])
        ok = (idx >= 0) & (seq.doc.gather(1, idx.clamp(min=0)) == last_doc)
        g = xBC_raw.gather(1, idx.clamp(min=0)[..., None].expand(-1, -1, self.conv_dim))
        return g * ok[..., None].to(g.dtype)

    def step(self, u: torch.Tensor, st: Step, cache: dict) -> torch.Tensor:
        r = st.rows
        z, xBC_raw, dt = self._split(self.in_proj(u[:, 0]))
        window = torch.cat([cache["conv"][r], xBC_raw[:, None]], dim=1)  # (n, K, conv_dim)
        cache["conv"][r] = window[:, 1:]
        xBC = F.silu(
            torch.einsum("bkc,ck->bc", window, self.conv1d.weight[:, 0]) + self.conv1d.bias
        )
        x, B, C, dt = self._ssm_inputs(xBC, dt)
        wide = cache["ssm"].dtype  # the prefill's scan dtype: fp32 at least
        A = -torch.exp(self.A_log.to(wide))
        rep = self.nheads // self.ngroups
        x, dt = x.to(wide), dt.to(wide)
        Bh, Ch = B.repeat_interleave(rep, dim=1).to(wide), C.repeat_interleave(rep, dim=1).to(wide)
        state = torch.exp(dt * A)[..., None, None] * cache["ssm"][r] + torch.einsum(
            "bh,bhp,bhs->bhps", dt, x, Bh
        )
        cache["ssm"][r] = state
        y = torch.einsum("bhps,bhs->bhp", state, Ch) + x * self.D.to(wide)[:, None]
        y = y.to(z.dtype)
        y = self.norm(y.reshape(-1, 1, self.d_inner), z[:, None])
        return self.out_proj(y)

    def extend(self, u: torch.Tensor, ext: Extension, cache: dict) -> torch.Tensor:
        """u (n, L, d): L new positions after the cached rows `ext.rows` (read-only). The conv
        window starts with the cached inputs; the SSM is linear in its state, so the scan runs
        from zero and the cached state's part, C_t exp(sum_{s<=t} dt_s A) S_0, is added."""
        n, L, _ = u.shape
        # (n, K-1, conv_dim) raw inputs before the extension, zeros where another document was
        hist = cache["conv"].index_select(0, ext.rows)
        one_doc = torch.zeros(n, hist.shape[1] + L, dtype=torch.long, device=u.device)
        z, x, bc, dt, _ = self._project(u, one_doc, hist)
        B, C = bc.unflatten(-1, (2, self.ngroups, self.d_state)).unbind(2)
        x = x.unflatten(-1, (self.nheads, self.headdim))
        dt = F.softplus(dt + self.dt_bias)
        S0 = cache["ssm"].index_select(0, ext.rows)  # (n, H, P, N)
        wide = S0.dtype
        A, D = -torch.exp(self.A_log.to(wide)), self.D.to(wide)
        x, dt, B, C = x.to(wide), dt.to(wide), B.to(wide), C.to(wide)
        y, _ = ssd_scan(x, dt, A, B, C, self.chunk_size, one_doc[:, :L], D)
        Ch = C.repeat_interleave(self.nheads // self.ngroups, dim=2)  # (n, L, H, N)
        decay = torch.exp(torch.cumsum(dt * A, dim=1))  # (n, L, H)
        y = y + torch.einsum("blhs,bhps->blhp", Ch, S0) * decay[..., None]
        y = self.norm(y.to(z.dtype).reshape(n, L, self.d_inner), z)
        return self.out_proj(y)
