"""The nested H-Net: encoder -> routing -> downsample -> inner -> dechunk -> decoder.

A layout is a nested list: [enc, inner, dec] for a stage, [main] for the innermost network, e.g.
["m4", ["T1m4", ["T26"], "m4T1"], "m4"]. An isotropic model is just ["T24"]. Level s runs at
width d_model[s]; the encoder output is padded with a learned (zero-init) vector to the next
width on the way in and sliced back on the way out.

Stage output (paper Sec. 2): decoder( upsample(smooth(inner)) * STE(c) + residual(enc) ).
Every module takes a `Seq`; cached generation uses `step` on one new position per row, and an
inner stage steps only for the rows whose router fired.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from hnetbench.config import ConfigError
from hnetbench.models import chunking
from hnetbench.models.blocks import LevelSpec
from hnetbench.models.isotropic import Isotropic
from hnetbench.models.routing import Router, boundaries, space_boundaries, spacelike
from hnetbench.models.seqinfo import Extension, Seq, Step

# Full-sequence forwards pack the rows' chunks into one row for the inner network (see
# HNet.forward); False keeps the padded batch layout (tests hold the two equal).
PACK_ROWS = True


@dataclass
class StageOptions:
    chunking: str = "dc"
    router: str = "cosine"
    pool_size: int = 6
    smoothing: bool = True
    ste: bool = True
    residual_proj: bool = True
    norm_balance: bool = True
    downsample: str = "select"
    kernels: str = "auto"
    residual_bias: bool = True  # the reference's residual projection has a bias


class HNet(nn.Module):
    def __init__(self, layout: list, level: int, specs: list[LevelSpec], opt: StageOptions) -> None:
        super().__init__()
        self.level, self.opt = level, opt
        self.d = specs[level].d
        keep_norm = opt.norm_balance or level == 0  # the outermost closing norm always stays
        self.is_main = len(layout) == 1
        if self.is_main:
            self.main = Isotropic(layout[0], specs[level], final_norm=keep_norm)
            return
        enc, inner, dec = layout
        if opt.chunking == "space" and level > 0:
            raise ConfigError("model.chunking: 'space' applies to bytes, i.e. 1-stage H-Nets only")
        self.encoder = Isotropic(enc, specs[level], final_norm=opt.norm_balance)
        self.router = Router(self.d, opt.router) if opt.chunking == "dc" else None
        self.inner = HNet(inner, level + 1, specs, opt)
        self.decoder = Isotropic(dec, specs[level], final_norm=keep_norm)
        d_next = specs[level + 1].d
        self.pad = nn.Parameter(torch.zeros(d_next - self.d)) if d_next > self.d else None
        # learned chunking smooths with the reference's clamped p (space/pool keep P = 1 exact)
        self._ref_clamp = opt.chunking == "dc"
        self.residual = None
        if opt.residual_proj:  # zero weight: the stage starts as encoder -> decoder + bias
            # the bias keeps torch's default init, as the reference's (never re-initialised)
            self.residual = nn.Linear(self.d, self.d, bias=opt.residual_bias)
            nn.init.zeros_(self.residual.weight)
            self.residual._keep_init = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        # checkpoints written before the residual projection had a bias load as bias 0 (the same
        # function), so earlier runs still evaluate
        key, residual = prefix + "residual.bias", getattr(self, "residual", None)
        if (residual is not None and residual.bias is not None
                and key not in state_dict and prefix + "residual.weight" in state_dict):
            state_dict[key] = torch.zeros_like(residual.bias)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ full sequences

    def _route(
        self, h: torch.Tensor, seq: Seq, ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        doc_start = torch.ones_like(seq.doc, dtype=torch.bool)
        doc_start[:, 1:] = seq.doc[:, 1:] != seq.doc[:, :-1]
        if self.opt.chunking == "dc":
            p = self.router(h, doc_start, self.opt.kernels)
            b = boundaries(p, doc_start)
        else:
            b = (
                space_boundaries(ids)
                if self.opt.chunking == "space"
                else seq.pos % self.opt.pool_size == 0
            )
            b = b | doc_start
            b[:, 0] = True
            p = b.to(h.dtype)
        valid = seq.valid()
        if valid is not None:  # no chunks start in a padded tail
            b = b & valid
        return p, b

    def _residual(self, h: torch.Tensor) -> torch.Tensor:
        """The residual projection in fp32 at least (float64 models stay float64), whatever
        the dtype of the weights (bf16 weights are upcast) or of an enclosing autocast."""
        if self.residual is None:
            return h
        dt = torch.promote_types(self.residual.weight.dtype, torch.float32)
        bias = self.residual.bias
        with torch.autocast(device_type=h.device.type, enabled=False):
            out = F.linear(
                h.to(dt), self.residual.weight.to(dt), None if bias is None else bias.to(dt)
            )
        return out.to(h.dtype)

    def forward(
        self,
        x: torch.Tensor,
        seq: Seq,
        aux: list[dict],
        ids: torch.Tensor | None = None,
        collect: dict | None = None,
    ) -> torch.Tensor:
        if collect is not None:
            self._collect_counters(seq, collect)
        if self.is_main:
            return self.main(
                x, seq, collect.setdefault("main", []) if collect is not None else None
            )
        h = self.encoder(x, seq, collect.setdefault("enc", []) if collect is not None else None)
        p, b = self._route(h, seq, ids)
        valid = seq.valid()
        aux.append({"p": p, "b": b, "valid": valid, "learned": self.opt.chunking == "dc",
                    "rows": seq.rows})

        xc, cmask, idx = chunking.downsample(h, b, seq.doc, self.opt.downsample)
        n = cmask.sum(1)
        cdoc = seq.doc.gather(1, idx)
        cdoc = torch.where(cmask, cdoc, cdoc.gather(1, (n - 1)[:, None]))  # tail continues last doc
        cstart = torch.ones_like(cmask)
        cstart[:, 1:] = cdoc[:, 1:] != cdoc[:, :-1]
        B, M = cmask.shape
        # Full sequences run the inner network over every row's chunks packed into one row
        # (each row starts a document, so nothing crosses rows): rows cut different chunk
        # counts, and padding them to the longest wasted ~8-20% of the inner stages' work.
        # Cached generation keeps the batch layout its caches are indexed by.
        pack = PACK_ROWS and collect is None and seq.rows is None and B > 1
        if pack:
            keep = cmask.flatten().nonzero()[:, 0]  # row-major: row r's chunks in order
            xc = xc.flatten(0, 1).index_select(0, keep)[None]
            cseq = Seq.from_doc_start(cstart.flatten()[keep][None], rows=keep // M)
        elif seq.rows is not None:  # already one packed row: no padding, every chunk valid
            cseq = Seq.from_doc_start(cstart, rows=seq.rows[idx[0]])
        else:
            cseq = Seq.from_doc_start(cstart, lengths=n, capacity=seq.capacity)
        if self.pad is not None:
            xc = torch.cat([xc, self.pad.to(xc.dtype).expand(*xc.shape[:2], -1)], dim=-1)
        inner_collect = collect.setdefault("inner", {}) if collect is not None else None
        zc = self.inner(xc, cseq, aux, None, inner_collect)[..., : self.d]
        if pack:  # back to (B, M): padded slots stay 0 (no position reads them)
            zc = zc.new_zeros(B * M, self.d).index_copy(0, keep, zc[0]).view(B, M, self.d)

        P = torch.where(cmask, p.gather(1, idx), torch.ones_like(p[:, :1]))
        zbar = chunking.smooth(zc, P, self.opt.smoothing, self.opt.kernels, self._ref_clamp)
        factor = chunking.ste(chunking.confidence(p, b), self.opt.ste)
        y = chunking.upsample(zbar, b) * factor[..., None] + self._residual(h)
        if collect is not None:
            self._collect_state(h, p, b, ids, zbar, n, seq, collect)
        return self.decoder(y, seq, collect.setdefault("dec", []) if collect is not None else None)

    # ------------------------------------------------------------------ cached generation

    def _collect_counters(self, seq: Seq, collect: dict) -> None:
        B, L = seq.doc.shape
        end = seq.lengths if seq.lengths is not None else torch.full((B,), L, device=seq.doc.device)
        collect["n"] = end.clone()
        collect["pos"] = seq.pos.gather(1, (end - 1)[:, None])[:, 0] + 1
        collect["doc"] = seq.doc.gather(1, (end - 1)[:, None])[:, 0]

    def _collect_state(self, h, p, b, ids, zbar, n, seq, collect) -> None:  # noqa: ANN001
        last = (collect["n"] - 1)[:, None]
        collect["zbar"] = zbar.gather(1, (n - 1)[:, None, None].expand(-1, 1, self.d))[:, 0].clone()
        if self.router is not None and self.router.kind == "cosine":
            collect["k"] = self.router.keys(
                h.gather(1, last[..., None].expand(-1, 1, self.d))[:, 0]
            )
        if self.opt.chunking == "space":
            collect["prev_space"] = spacelike(ids.gather(1, last))[:, 0]
        if self.opt.downsample != "select":  # bytes after the last boundary, pooled so far
            idx = torch.arange(h.shape[1], device=h.device)[None]
            lastb = torch.where(b, idx, torch.zeros_like(idx)).amax(1, keepdim=True)
            pend = ((idx > lastb) & (idx <= last) & (seq.doc == collect["doc"][:, None]))[..., None]
            collect["cnt"] = pend.sum(1).to(h.dtype)
            collect["sum"] = (h * pend).sum(1)
            collect["max"] = torch.where(pend, h, torch.full_like(h, float("-inf"))).amax(1)

    def step(
        self, x: torch.Tensor, rows: torch.Tensor, cache: dict, ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: (n, 1, D) one new position for batch rows `rows` -> (n, 1, D)."""
        st = Step(rows, cache["n"][rows], cache["pos"][rows], cache["doc"][rows])
        cache["n"][rows] += 1
        cache["pos"][rows] += 1
        if self.is_main:
            return self.main.step(x, st, cache["main"])
        h = self.encoder.step(x, st, cache["enc"])
        h1 = h[:, 0]
        if self.opt.chunking == "dc":
            p, k = self.router.step(h1, cache["k"][rows] if "k" in cache else None)
            if k is not None:
                cache["k"][rows] = k
            b = p > 0.5
        else:
            if self.opt.chunking == "space":
                sp = spacelike(ids)
                b = sp & ~cache["prev_space"][rows]
                cache["prev_space"][rows] = sp
            else:
                b = st.pos % self.opt.pool_size == 0
            p = b.to(h.dtype)
        z = self._pool_step(h1, rows, b, cache)
        fire = torch.nonzero(b).flatten()
        if fire.numel():
            zf = z[fire][:, None]
            if self.pad is not None:
                zf = torch.cat([zf, self.pad.to(zf.dtype).expand(len(fire), 1, -1)], dim=-1)
            out = self.inner.step(zf, rows[fire], cache["inner"])[:, 0, : self.d]
            P = p[fire]
            if self._ref_clamp:
                out, P = chunking.clamp_like_reference(out, P)
            P = P[:, None]
            prev = cache["zbar"][rows[fire]]
            cache["zbar"][rows[fire]] = P * out + (1 - P) * prev if self.opt.smoothing else out
        factor = chunking.ste(chunking.confidence(p, b), self.opt.ste)
        y = cache["zbar"][rows] * factor[:, None] + self._residual(h1)
        return self.decoder.step(y[:, None], st, cache["dec"])

    def can_extend(self) -> bool:
        """Whether `extend` covers this configuration (pooled downsampling does not)."""
        return self.is_main or (self.opt.downsample == "select" and self.inner.can_extend())

    def extend(self, x: torch.Tensor, ext: Extension, cache: dict,
               ids: torch.Tensor | None = None) -> torch.Tensor:
        """x (n, L, D): L new positions after the cached rows `ext.rows`, read-only (the cache
        is not advanced): what a full forward of the cached context and the new positions
        gives at the new positions. They continue their rows' documents; positions past
        `ext.lengths` are padding."""
        if self.is_main:
            return self.main.extend(x, ext, cache["main"])
        h = self.encoder.extend(x, ext, cache["enc"])
        n, L, _ = h.shape
        r = ext.rows
        if self.opt.chunking == "dc":
            p = self.router.extend(h, cache["k"][r] if "k" in cache else None)
            b = p > 0.5
        else:
            if self.opt.chunking == "space":
                sp = spacelike(ids)
                b = sp & ~torch.cat([cache["prev_space"][r][:, None], sp[:, :-1]], dim=1)
            else:
                b = ext.pos % self.opt.pool_size == 0
            p = b.to(h.dtype)
        b = b & (torch.arange(L, device=h.device)[None] < ext.lengths[:, None])
        # the new chunks (select: h at the boundaries), after each row's cached ones
        xc, cmask, idx = chunking.downsample(h, b, ext.doc, "select")
        m = cmask.sum(1)
        zc = xc.new_zeros(n, 0, self.d)
        if xc.shape[1]:
            if self.pad is not None:
                xc = torch.cat([xc, self.pad.to(xc.dtype).expand(*xc.shape[:2], -1)], dim=-1)
            inner = Extension.after(cache["inner"], r, m, xc.shape[1], ext.repeat)
            zc = self.inner.extend(xc, inner, cache["inner"])[..., : self.d]
        # smoothing from the cached last chunk: prepend it as a restart (P = 1 copies it)
        prev = cache["zbar"][r][:, None]
        P = torch.where(cmask, p.gather(1, idx), torch.ones_like(p[:, :1]))
        if self.opt.smoothing and self._ref_clamp:
            zc, P = chunking.clamp_like_reference(zc, P)
        zs = torch.cat([prev, zc], dim=1)
        if self.opt.smoothing:
            zs = chunking.smooth(zs, torch.cat([torch.ones_like(P[:, :1]), P], dim=1), True,
                                 self.opt.kernels)
        # position t reads the latest chunk at or before it: cached (0) until a new one starts
        up = zs.gather(1, b.long().cumsum(1)[..., None].expand(-1, -1, self.d))
        factor = chunking.ste(chunking.confidence(p, b), self.opt.ste)
        y = up * factor[..., None] + self._residual(h)
        return self.decoder.extend(y, ext, cache["dec"])

    def _pool_step(
        self, h1: torch.Tensor, rows: torch.Tensor, b: torch.Tensor, cache: dict
    ) -> torch.Tensor:
        """The chunk vector a boundary here would emit (select: h itself; mean/max: pooled)."""
        mode = self.opt.downsample
        if mode == "select":
            return h1
        cache["sum"][rows] += h1
        cache["cnt"][rows] += 1
        cache["max"][rows] = torch.maximum(cache["max"][rows], h1)
        z = (
            cache["sum"][rows] / cache["cnt"][rows]
            if mode == "mean"
            else cache["max"][rows].clone()
        )
        r = rows[b]  # a fired boundary closes the pooled span
        cache["sum"][r] = 0
        cache["cnt"][r] = 0
        cache["max"][r] = float("-inf")
        return z
