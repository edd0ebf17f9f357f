"""The Mamba-2 SSD scan, with document resets: `ssd_scan` dispatches to the C recurrence
(`kernels/ssd_cpu.c`, the CPU default when a C compiler builds it) or to the torch scan here.

Same contract as `mamba2.ssd_chunked` (kept as the reference both are tested against, with
`mamba2.ssd_naive`). The torch scan `ssd_scan_torch` has two forms:

`ssd_scan_factored` (the default) uses that a head's decay is a scalar: inside a chunk,
exp(cs_i - cs_j) = exp(cs_i - r) * exp(r - cs_j), so

    y_i = exp(cs_i - r) * sum_{j <= i, same doc} (C_i . B_j) * exp(r - cs_j) * dt_j x_j

and the Q x Q matrix (C_i . B_j, masked) is one per group and chunk instead of one decay matrix
per head: the per-head work becomes elementwise scalings of (position, head) tensors and one
wide matmul per group, in the inputs' own layout (views, no permute-copies, when G = 1). The
shift r (half the chunk's total log-decay, detached: the product does not depend on it) keeps
both factors within exp(+-LIMIT/2); a chunk whose total decay exceeds LIMIT would overflow
float32, so `ssd_scan_torch` then halves the chunk, and below 8 positions falls back to:

`ssd_scan_segsum`, which builds the per-head decay matrix from differences cs_i - cs_j (never
overflows), reorganised for fewer elementwise passes and copies:
- one head-major layout (b, G, R, chunks, Q, .) so every contraction is a plain batched matmul
  (no einsum permute-copies); B and C stay per group (no repeat over the R heads of a group);
- the intra-chunk decay matrix is built once (subtract, mask, exp, times C.B) per head;
- the chunk-to-chunk recurrence runs over unbound chunks (no per-chunk slicing, whose backward
  zero-fills a full-size gradient each time); a reset makes the chunk's carried decay 0;
- the carried states reach the outputs in one matmul per group for all chunks;
- the chunk length is chosen per shape (`pick_chunk`): the Q x Q decay matrix costs ~Q per
  position and head, the carried states ~N*P/Q, so Q ~ sqrt(N*P), never above the configured
  chunk and never far above the sequence length. The result does not depend on Q beyond
  float rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hnetbench.kernels import cpu_build, ssd_cpu


def pick_chunk(L: int, chunk: int, d_state: int, headdim: int) -> int:
    """Chunk length for a scan of length L: a power of two near sqrt(d_state*headdim), at least
    32 (measured: below that the carried states cost more than the matrices save), at most
    the configured `chunk`, and no longer than L rounded up to a power of two."""
    q = 2 ** round(math.log2(max(1.0, math.sqrt(d_state * headdim))))
    q = max(32, q)
    q = min(q, 2 ** math.ceil(math.log2(max(L, 1))))
    return max(1, min(q, chunk))


def _carry(g: torch.Tensor, states: torch.Tensor, dim: int = 3
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk-to-chunk recurrence S_c = S_{c-1} * g_c + states_c over dimension `dim` (the
    chunks) of states and g, g broadcasting against the states of one chunk. Returns (the
    state entering each chunk, the state after the last one). A loop over unbound chunks:
    slicing a tensor per chunk would make autograd zero-fill a full-size gradient each time."""
    gs, ss = g.unbind(dim), states.unbind(dim)
    S = ss[0]
    entering = [torch.zeros_like(S), S]
    for c in range(1, len(ss)):
        S = torch.addcmul(ss[c], S, gs[c])
        entering.append(S)
    return torch.stack(entering[:-1], dim=dim), S


def _pad_to_chunks(x, dt, B, C, doc, Q: int):  # noqa: ANN001, ANN202 - the scans' inputs
    """Pad the length to a multiple of Q: zero dt adds nothing and decays nothing, and the
    padding continues the last document. doc None = one document per row."""
    b, L = x.shape[:2]
    if doc is None:
        doc = torch.zeros(b, L, dtype=torch.long, device=x.device)
    pad = (-L) % Q
    if pad:
        x, dt = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(dt, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, 0, 0, pad)), F.pad(C, (0, 0, 0, 0, 0, pad))
        doc = torch.cat([doc, doc[:, -1:].expand(b, pad)], dim=1)
    return x, dt, B, C, doc


class _DecayTimesCB(torch.autograd.Function):
    """M_ij = exp(cs_i - cs_j) * CB_ij where j <= i in the same document, else 0.

    The Q x Q per-head matrices are the largest tensors of the scan; written out, autograd makes
    ~10 full-size passes over them (subtract, mask, exp, product, and a negation, copies and
    reductions backward). Here: one subtract, in-place mask and exp, one product forward; backward
    dseg = dM * CB * E (E = the masked exponentials) gives d cs_i = sum_j dseg_ij and
    d cs_j = -sum_i dseg_ij, and d CB = sum over the group's heads of dM * E.
    cs (b,G,R,nc,Q), CB (b,G,nc,Q,Q), cut (b,1,1,nc,Q,Q) bool: True where M is 0."""

    @staticmethod
    def forward(ctx, cs, CB, cut):  # noqa: ANN001, ANN205
        E = cs[..., :, None] - cs[..., None, :]
        E.masked_fill_(cut, float("-inf")).exp_()
        ctx.save_for_backward(E, CB)
        return E * CB[:, :, None]

    @staticmethod
    def backward(ctx, dM):  # noqa: ANN001, ANN205
        E, CB = ctx.saved_tensors
        dCB = (dM * E).sum(2) if ctx.needs_input_grad[1] else None
        dseg = dM * CB[:, :, None]
        dseg.mul_(E)
        dcs = dseg.sum(-1) - dseg.sum(-2)
        return dcs, dCB, None


def ssd_scan_segsum(x, dt, A, B, C, chunk: int, doc=None):  # noqa: ANN001, ANN201
    """x (b,L,H,P), dt (b,L,H), A (H,), B/C (b,L,G,N), doc (b,L) nondecreasing document ids.

    Returns (y (b,L,H,P), final state (b,H,P,N)), equal to `ssd_chunked` up to rounding.
    """
    b, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    R = H // G
    Q = pick_chunk(L, chunk, N, P)
    x, dt, B, C, doc = _pad_to_chunks(x, dt, B, C, doc, Q)
    nc = x.shape[1] // Q
    # head-major views: (b, G, R, nc, Q, .) for per-head tensors, (b, G, nc, Q, .) per group
    xdt = (x * dt[..., None]).view(b, nc, Q, G, R, P).permute(0, 3, 4, 1, 2, 5)
    cs = (dt * A).view(b, nc, Q, G, R).permute(0, 3, 4, 1, 2).cumsum(-1)  # (b,G,R,nc,Q)
    Bg = B.view(b, nc, Q, G, N).permute(0, 3, 1, 2, 4)  # (b, G, nc, Q, N)
    Cg = C.view(b, nc, Q, G, N).permute(0, 3, 1, 2, 4)
    doc = doc.view(b, nc, Q)

    # 1) inside each chunk: y_i = sum_{j<=i, same doc} exp(cs_i - cs_j) (C_i.B_j) xdt_j
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    cut = ~(causal & (doc[..., :, None] == doc[..., None, :]))[:, None, None]  # (b,1,1,nc,Q,Q)
    M = _DecayTimesCB.apply(cs, Cg @ Bg.transpose(-1, -2), cut)  # (b, G, R, nc, Q, Q)
    y = M @ xdt

    # 2) each chunk's end state from its last document's positions: (b, G, R, nc, N, P)
    last = doc[..., -1]  # (b, nc)
    same_last = (doc == last[..., None]).to(x.dtype)[:, None, None]  # (b,1,1,nc,Q)
    w = torch.exp(cs[..., -1:] - cs) * same_last
    states = Bg.transpose(-1, -2)[:, :, None] @ (xdt * w[..., None])

    # 3) carry across chunks: through chunk c the state decays by exp(cs_end) unless the chunk
    #    holds a reset (then its last document starts inside it and nothing older survives)
    prev_last = F.pad(last, (1, 0), value=-1)[:, :-1]
    cont = (last == prev_last).to(x.dtype)[:, None, None]  # (b,1,1,nc)
    s_in, s_final = _carry((torch.exp(cs[..., -1]) * cont)[..., None, None], states)
    # C_i . (state entering chunk c), for the R heads of a group in one matmul; positions of a
    # document that starts inside the chunk get nothing (chunk 0 enters with prev_last = -1)
    s_in = s_in.permute(0, 1, 3, 4, 2, 5).reshape(b, G, nc, N, R * P)
    off = (Cg @ s_in).view(b, G, nc, Q, R, P).permute(0, 1, 4, 2, 3, 5)
    enter = (doc == prev_last[..., None]).to(x.dtype)[:, None, None]  # (b,1,1,nc,Q)
    y = torch.addcmul(y, off, (torch.exp(cs) * enter)[..., None])
    y = y.permute(0, 3, 4, 1, 2, 5).reshape(b, nc * Q, H, P)[:, :L]
    final = s_final.reshape(b, H, N, P).transpose(-1, -2)
    return y, final


# largest total log-decay of one chunk for the factored form: its factors stay within exp(+-40)
# (~2e17), far from float32's 3e38 even after the products and sums of a chunk
LIMIT = 80.0
MIN_FACTORED_CHUNK = 8


def ssd_scan(x, dt, A, B, C, chunk: int, doc=None, D=None):  # noqa: ANN001, ANN201
    """x (b,L,H,P), dt (b,L,H), A (H,), B/C (b,L,G,N), doc (b,L) nondecreasing document ids,
    D (H,) an optional skip: y += D_h x.

    Returns (y (b,L,H,P), final state (b,H,P,N)), equal to `ssd_chunked` up to rounding. On
    CPU (float32/float64) the C recurrence `kernels.ssd_cpu` when it builds (the skip in the
    same pass), else (and on other devices) `ssd_scan_torch`."""
    if cpu_build.handles(x) and ssd_cpu.available():
        return ssd_cpu.ssd_scan_cpu(x, dt, A, B, C, doc, D)
    y, final = ssd_scan_torch(x, dt, A, B, C, chunk, doc)
    return (y if D is None else torch.addcmul(y, x, D[:, None])), final


def ssd_scan_torch(x, dt, A, B, C, chunk: int, doc=None):  # noqa: ANN001, ANN201
    """The torch scan: the factored form with the chunk from `pick_chunk`, halved while some
    chunk decays by more than LIMIT, else the segsum form."""
    Q = pick_chunk(x.shape[1], chunk, B.shape[3], x.shape[3])
    a = (dt * A).detach()  # (b, L, H) log-decay per position, <= 0
    while Q >= MIN_FACTORED_CHUNK:
        pad = (-a.shape[1]) % Q
        per_chunk = F.pad(a, (0, 0, 0, pad)).unflatten(1, (-1, Q)).sum(2)
        if float(-per_chunk.min()) <= LIMIT:
            return ssd_scan_factored(x, dt, A, B, C, Q, doc)
        Q //= 2
    return ssd_scan_segsum(x, dt, A, B, C, chunk, doc)


def ssd_scan_factored(x, dt, A, B, C, Q: int, doc=None):  # noqa: ANN001, ANN201
    """The factored scan with chunk length exactly Q (module doc); the caller makes sure no
    chunk's total log-decay exceeds LIMIT (else exp(r - cs) can overflow float32)."""
    b, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    R = H // G
    x, dt, B, C, doc = _pad_to_chunks(x, dt, B, C, doc, Q)
    nc = x.shape[1] // Q

    def per_head(t: torch.Tensor) -> torch.Tensor:  # (b, nc, Q, H) -> (b, G, nc, Q, R, 1)
        return t.view(b, nc, Q, G, R).permute(0, 3, 1, 2, 4)[..., None]

    cs = (dt * A).view(b, nc, Q, H).cumsum(2)  # log-decay from the chunk's start, falling
    total = cs[:, :, -1]  # (b, nc, H): each chunk's whole decay
    xg = x.view(b, nc, Q, G, R, P).permute(0, 3, 1, 2, 4, 5)  # (b, G, nc, Q, R, P)
    dt = dt.view(b, nc, Q, H)
    Bg = B.view(b, nc, Q, G, N).permute(0, 3, 1, 2, 4)  # (b, G, nc, Q, N)
    Cg = C.view(b, nc, Q, G, N).permute(0, 3, 1, 2, 4)
    doc = doc.view(b, nc, Q)

    # 1) inside each chunk, through the group's masked C.B (one Q x Q matrix per group)
    r = (0.5 * total.detach())[:, :, None]  # (b, nc, 1, H)
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    keep = (causal & (doc[..., :, None] == doc[..., None, :]))[:, None]  # (b, 1, nc, Q, Q)
    CB = (Cg @ Bg.transpose(-1, -2)) * keep
    # dt folds into the per-(position, head) factors: one pass over x each, not two
    y = CB @ (xg * per_head(dt * torch.exp(r - cs))).reshape(b, G, nc, Q, R * P)
    y = y.view(b, G, nc, Q, R, P) * per_head(torch.exp(cs - r))

    # 2) each chunk's end state from its last document's positions: (b, G, nc, N, R*P)
    last = doc[..., -1]  # (b, nc)
    same_last = (doc == last[..., None]).to(x.dtype)[..., None]  # (b, nc, Q, 1)
    w = torch.exp(total[:, :, None] - cs) * same_last  # decay to the chunk's end, <= 1
    states = Bg.transpose(-1, -2) @ (xg * per_head(dt * w)).reshape(b, G, nc, Q, R * P)

    # 3) carry across chunks (a chunk holding a reset carries nothing older), then C_i . state
    prev_last = F.pad(last, (1, 0), value=-1)[:, :-1]
    cont = (last == prev_last).to(x.dtype)[..., None]  # (b, nc, 1)
    g = (torch.exp(total) * cont).view(b, nc, G, R).permute(0, 2, 1, 3)  # (b, G, nc, R)
    s_in, s_final = _carry(g[..., None, :, None], states.view(b, G, nc, N, R, P), dim=2)
    off = (Cg @ s_in.view(b, G, nc, N, R * P)).view(b, G, nc, Q, R, P)
    enter = (doc == prev_last[..., None]).to(x.dtype)[..., None]  # (b, nc, Q, 1)
    y = torch.addcmul(y, off, per_head(torch.exp(cs) * enter))
    y = y.permute(0, 2, 3, 1, 4, 5).reshape(b, nc * Q, H, P)[:, :L]
    final = s_final.permute(0, 1, 3, 4, 2).reshape(b, H, P, N)  # (b, G, N, R, P) -> (b,H,P,N)
    return y, final
