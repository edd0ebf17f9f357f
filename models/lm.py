"""The language-model wrapper: embeddings -> backbone (isotropic or H-Net) -> head, plus the
loss, initialisation, optimizer groups with per-stage LR multipliers, and `build_model`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from hnetbench.config import ConfigError, ModelConfig
from hnetbench.kernels import cpu_build, cross_entropy_cpu
from hnetbench.models import chunking
from hnetbench.models.blocks import LevelSpec
from hnetbench.models.hnet import HNet, StageOptions
from hnetbench.models.isotropic import Isotropic
from hnetbench.models.routing import Router
from hnetbench.models.seqinfo import Extension, Seq

N_GPT = 4.6  # GPT-2 bytes per token on FineWeb-Edu (paper App. C)


def unpack_rows(t: torch.Tensor, rows: torch.Tensor | None, B: int) -> torch.Tensor:
    """A stage's (1, N) tensor over rows packed into one (`Seq.rows`: the batch row of each
    position, in order) -> (B, M) in the batch layout, each row's values first, then zeros
    (False) up to the longest row. Unpacked tensors (rows None) come back as they are."""
    if rows is None:
        return t
    counts = torch.bincount(rows, minlength=B)
    start = torch.cumsum(counts, 0) - counts
    col = torch.arange(rows.numel(), device=rows.device) - start[rows]
    out = t.new_zeros(B, int(counts.max()) if rows.numel() else 0)
    out[rows, col] = t[0]
    return out


@dataclass
class LMOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None
    ar_loss: torch.Tensor | None = None
    nats_sum: torch.Tensor | None = None
    n_targets: int = 0
    ratio_loss: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)
    boundaries: list[torch.Tensor] = field(default_factory=list)


# ----------------------------------------------------------------------------- config checks


def _per_level(values: list, n: int, key: str) -> list:
    if len(values) == 1:
        return list(values) * n
    if len(values) != n:
        raise ConfigError(
            f"model.{key}: expected 1 or {n} values (one per level), got {len(values)}"
        )
    return list(values)


def layout_depth(layout: object, top: bool = True) -> int:
    """Number of levels of a nested layout; one-line ConfigError when malformed."""
    if isinstance(layout, str) and top:
        return 1
    if isinstance(layout, list) and len(layout) == 1 and isinstance(layout[0], str):
        return 1
    if (
        isinstance(layout, list)
        and len(layout) == 3
        and isinstance(layout[0], str)
        and isinstance(layout[2], str)
    ):
        return 1 + layout_depth(layout[1], top=False)
    raise ConfigError(
        f"model.layout: bad nested layout {layout!r} (expected [encoder, inner, decoder] with "
        "strings around a nested list, or [main])"
    )


def _normalise_layout(layout: object) -> list:
    if isinstance(layout, str):
        return [layout]
    if len(layout) == 1:
        return [layout[0]]
    return [layout[0], _normalise_layout(layout[1]), layout[2]]


def level_specs(cfg: ModelConfig, n: int) -> list[LevelSpec]:
    if len(cfg.d_model) != n:
        raise ConfigError(
            f"model.d_model: layout has {n} level(s) but d_model has {len(cfg.d_model)} widths"
        )
    if any(b < a for a, b in zip(cfg.d_model, cfg.d_model[1:])):
        raise ConfigError(
            f"model.d_model: widths must not decrease from outer to inner, got {cfg.d_model}"
        )
    d_int = _per_level(cfg.d_intermediate, n, "d_intermediate")
    heads = _per_level(cfg.attn_num_heads, n, "attn_num_heads")
    rot = _per_level(cfg.attn_rotary_dim, n, "attn_rotary_dim")
    win = _per_level(cfg.attn_window, n, "attn_window")
    return [
        LevelSpec(
            cfg.d_model[s],
            d_int[s],
            heads[s],
            rot[s],
            win[s],
            cfg.mamba_d_state,
            cfg.mamba_d_conv,
            cfg.mamba_expand,
            cfg.mamba_headdim,
            cfg.mamba_ngroups,
            cfg.mamba_chunk_size,
        )
        for s in range(n)
    ]


# ----------------------------------------------------------------------------- the model

INIT_SCHEMES = ("reference", "gpt2")


def _height(iso: Isotropic) -> int:
    """Residual additions of a network: 1 per m/t layer, 2 per M/T (mixer and MLP)."""
    return sum(1 + (layer.mlp is not None) for layer in iso.layers)


def _residual_heights(net: HNet, enclosing: int = 0) -> list[tuple[Isotropic, int]]:
    """(network, cumulative height) for every isotropic network of an H-Net, outermost first:
    an encoder/decoder pair counts both, plus the pairs enclosing it; a main network adds its
    own height to all of those (goombalab/hnet's `_init_weights`)."""
    if net.is_main:
        return [(net.main, enclosing + _height(net.main))]
    n = enclosing + _height(net.encoder) + _height(net.decoder)
    return [(net.encoder, n), (net.decoder, n), *_residual_heights(net.inner, n)]


class CausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig, layout: list, n_levels: int) -> None:
        super().__init__()
        self.cfg, self.n_levels = cfg, n_levels
        specs = level_specs(cfg, n_levels)
        if cfg.chunking not in ("dc", "space", "pool"):
            raise ConfigError(f"model.chunking: expected dc|space|pool, got {cfg.chunking!r}")
        if cfg.downsample not in ("select", "mean", "max"):
            raise ConfigError(f"model.downsample: expected select|mean|max, got {cfg.downsample!r}")
        if cfg.init not in INIT_SCHEMES:
            raise ConfigError(f"model.init: expected {'|'.join(INIT_SCHEMES)}, got {cfg.init!r}")
        if cfg.router not in ("cosine", "linear"):
            raise ConfigError(f"model.router: expected cosine|linear, got {cfg.router!r}")
        self.ratio_targets = []
        if n_levels > 1:
            self.ratio_targets = _per_level(cfg.ratio_targets, n_levels - 1, "ratio_targets")
        if any(t <= 1 for t in self.ratio_targets):
            raise ConfigError(
                f"model.ratio_targets: every target must be > 1, got {cfg.ratio_targets}"
            )
        opt = StageOptions(
            cfg.chunking,
            cfg.router,
            cfg.pool_size,
            cfg.smoothing,
            cfg.ste,
            cfg.residual_proj,
            cfg.norm_balance,
            cfg.downsample,
            cfg.kernels,
            residual_bias=cfg.init == "reference",
        )
        d0 = cfg.d_model[0]
        self.embedding = nn.Embedding(cfg.vocab_size, d0)
        self.backbone = HNet(layout, 0, specs, opt)
        self.head = nn.Linear(d0, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embedding.weight
        # Set by a data-parallel trainer: sums a tensor over ranks in place, so the ratio loss
        # sees the router statistics of the global batch (see chunking.ratio_loss).
        self.ratio_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """`model.init`. reference (goombalab/hnet's `init_weights`): every linear of the
        encoders, decoders and main networks N(0, init_std), residual outputs (Mamba-2 and
        attention out_proj, SwiGLU fc2) N(0, init_std / sqrt(n)) with n the cumulative height:
        residual additions (1 per m/t layer, 2 per M/T) of this network and of every encoder
        and decoder enclosing it; the embedding N(0, 1); the residual projection's bias keeps
        torch's default. gpt2 (this suite's earlier init): n = 2 x layers of this network, the
        embedding N(0, init_std). Tied embeddings use init_std in both (an N(0, 1) LM head
        would start with huge logits)."""
        std = self.cfg.init_std
        reference = self.cfg.init == "reference"
        for iso, height in _residual_heights(self.backbone):
            n = height if reference else 2 * max(len(iso.layers), 1)
            scale = 1 / math.sqrt(n)
            for m in iso.modules():
                if isinstance(m, nn.Linear) and not getattr(m, "_keep_init", False):
                    nn.init.normal_(
                        m.weight, 0.0, std * (scale if getattr(m, "_residual_out", False) else 1)
                    )
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        for m in self.modules():  # the linear-router ablation's scorer
            if isinstance(m, Router) and m.kind == "linear":
                nn.init.normal_(m.score.weight, 0.0, std)
                nn.init.zeros_(m.score.bias)
        emb_std = 1.0 if reference and not self.cfg.tie_embeddings else std
        nn.init.normal_(self.embedding.weight, 0.0, emb_std)
        if not self.cfg.tie_embeddings:
            nn.init.normal_(self.head.weight, 0.0, std)

    # ------------------------------------------------------------------ forward

    def _check_len(self, T: int) -> None:
        if T > self.cfg.max_seq_len:
            raise ValueError(
                f"sequence length {T} exceeds model.max_seq_len {self.cfg.max_seq_len}"
            )

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor | None = None,
        doc_start: torch.Tensor | None = None,
    ) -> LMOutput:
        B, T = input_ids.shape
        self._check_len(T)
        if doc_start is None:
            doc_start = torch.zeros_like(input_ids, dtype=torch.bool)
        aux: list[dict] = []
        h = self.backbone(self.embedding(input_ids), Seq.from_doc_start(doc_start), aux, input_ids)
        logits = self.head(h)
        out = LMOutput(logits=logits, boundaries=[unpack_rows(a["b"], a["rows"], B) for a in aux])
        ratio = logits.new_zeros(())
        for s, a in enumerate(aux):
            b, p = a["b"], a["p"]
            n_valid = b.numel() if a["valid"] is None else int(a["valid"].sum())
            n_chunks = max(int(b.sum()), 1)
            out.stats[f"stage{s}/keep_frac"] = n_chunks / max(n_valid, 1)
            out.stats[f"stage{s}/bytes_per_chunk"] = B * T / n_chunks
            out.stats[f"stage{s}/boundary_prob"] = float(p.detach().float().mean())
            if a["learned"]:
                reduce = self.ratio_reduce if self.training else None
                r = chunking.ratio_loss(b, p, self.ratio_targets[s], a["valid"], reduce)
                out.stats[f"stage{s}/ratio_loss"] = float(r.detach())
                ratio = ratio + r
        out.ratio_loss = ratio
        if targets is not None:
            # fp32 at least: bf16 logits are upcast, a float64 model keeps float64
            wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
            if cpu_build.handles(wide) and cross_entropy_cpu.available():  # one C pass
                nats = cross_entropy_cpu.cross_entropy_sum_cpu(wide.flatten(0, 1),
                                                               targets.flatten())
            else:
                nats = F.cross_entropy(
                    wide.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
                )
            n = int((targets != -100).sum())
            out.nats_sum, out.n_targets = nats, n
            out.ar_loss = nats / max(n, 1)
            out.loss = out.ar_loss + self.cfg.ratio_alpha * ratio
        return out

    # ------------------------------------------------------------------ cached inference

    @torch.no_grad()
    def prefill(
        self, input_ids: torch.Tensor, doc_start: torch.Tensor, capacity: int
    ) -> tuple[torch.Tensor, dict]:
        """Run the prompt once, building caches; returns (last-position logits (B, V), cache)."""
        self._check_len(input_ids.shape[1])
        cache: dict = {"ids_len": input_ids.shape[1]}
        seq = Seq.from_doc_start(doc_start, capacity=capacity)
        h = self.backbone(self.embedding(input_ids), seq, [], input_ids, cache)
        return self.head(h[:, -1]), cache

    @torch.no_grad()
    def step(self, ids: torch.Tensor, cache: dict) -> torch.Tensor:
        """Append one token per row (B,) -> next-token logits (B, V)."""
        cache["ids_len"] += 1
        self._check_len(cache["ids_len"])
        rows = torch.arange(ids.shape[0], device=ids.device)
        h = self.backbone.step(self.embedding(ids)[:, None], rows, cache, ids)
        return self.head(h[:, 0])

    def can_extend(self) -> bool:
        return self.backbone.can_extend()

    @torch.no_grad()
    def extend(self, ids: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor,
               cache: dict) -> torch.Tensor:
        """Logits (n, L, V) of ids (n, L) appended to the prefilled rows `rows` (several rows
        may continue one cached row; positions past `lengths` are padding). The cache is only
        read: each call continues the prefilled contexts, so one context's continuations are
        scored without running the context again."""
        self._check_len(int(cache["ids_len"]) + ids.shape[1])
        ext = Extension.after(cache, rows, lengths, ids.shape[1])  # finds out `repeat`
        return self.head(self.backbone.extend(self.embedding(ids), ext, cache, ids))

    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        greedy: bool = False,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        from hnetbench.models.generate import generate

        return generate(self, prompts, max_new_tokens, temperature, top_p, greedy, generator)[0]

    # ------------------------------------------------------------------ optimizer groups

    def lr_multipliers(self, lr_mult: object = "auto") -> list[float]:
        n = self.n_levels
        if lr_mult == "none" or lr_mult is None:
            return [1.0] * n
        if lr_mult == "auto":
            if n == 1:
                return [1.0]
            N = list(self.ratio_targets) + [1.0]  # N_S = 1 for the main network
            D = self.cfg.d_model
            total = math.prod(N)
            return [math.sqrt(N_GPT * math.prod(N[s:]) / total * D[-1] / D[s]) for s in range(n)]
        if isinstance(lr_mult, (list, tuple)):
            if len(lr_mult) != n:
                raise ConfigError(
                    f"train.lr_mult: expected {n} values (one per level), got {len(lr_mult)}"
                )
            return [float(v) for v in lr_mult]
        raise ConfigError(
            f"train.lr_mult: expected auto|none|a list of {n} numbers, got {lr_mult!r}"
        )

    def param_groups(self, weight_decay: float, lr_mult: object = "auto") -> list[dict]:
        """AdamW groups per (level, decay); no decay on norms, biases, 1-d params, embeddings."""
        mults = self.lr_multipliers(lr_mult)
        buckets: dict[tuple[int, bool], list] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            level = name.count("inner.")  # embeddings and head live at level 0
            decay = p.ndim >= 2 and not name.startswith("embedding")
            buckets.setdefault((level, decay), []).append(p)
        return [
            {
                "params": ps,
                "weight_decay": weight_decay if decay else 0.0,
                "lr_mult": mults[level],
                "name": f"stage{level}/{'decay' if decay else 'no_decay'}",
            }
            for (level, decay), ps in sorted(buckets.items())
        ]


# ----------------------------------------------------------------------------- registry

ARCHS: dict[str, Callable[[ModelConfig], CausalLM]] = {}


def register_arch(name: str) -> Callable:
    def deco(fn: Callable[[ModelConfig], CausalLM]) -> Callable:
        ARCHS[name] = fn
        return fn

    return deco


@register_arch("hnet")
def _build_hnet(cfg: ModelConfig) -> CausalLM:
    n = layout_depth(cfg.layout)
    if n < 2:
        raise ConfigError(
            f"model.layout: arch 'hnet' needs [encoder, inner, decoder], got {cfg.layout!r}"
        )
    return CausalLM(cfg, _normalise_layout(cfg.layout), n)


@register_arch("isotropic")
def _build_isotropic(cfg: ModelConfig) -> CausalLM:
    if layout_depth(cfg.layout) != 1:
        raise ConfigError(
            f"model.layout: arch 'isotropic' needs one layout string, got {cfg.layout!r}"
        )
    return CausalLM(cfg, _normalise_layout(cfg.layout), 1)


def build_model(cfg: ModelConfig) -> CausalLM:
    if cfg.arch not in ARCHS:
        raise ConfigError(f"model.arch: expected one of {'|'.join(ARCHS)}, got {cfg.arch!r}")
    return ARCHS[cfg.arch](cfg)


_FILLS = (torch.Tensor.normal_, torch.Tensor.uniform_, nn.init.normal_, nn.init.uniform_,
          nn.init.trunc_normal_, nn.init.kaiming_uniform_, nn.init.kaiming_normal_,
          nn.init.xavier_uniform_, nn.init.xavier_normal_)


class _SkipFills(torch.overrides.TorchFunctionMode):
    """Skips in-place fills: meta tensors hold no values, and on meta a fill runs a Python
    decomposition (~2-6 ms each, and the first imports torch._dynamo: ~2 s). `nn.init`'s
    functions are matched themselves: the mode sees them first, and the tensor method they
    call runs with the mode switched off; `nn.init.eye_` shows up as `torch.eye(out=...)`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func in _FILLS:
            return args[0] if args else kwargs["tensor"]
        if func is torch.eye and kwargs and "out" in kwargs:
            return kwargs["out"]
        return func(*args, **(kwargs or {}))


def count_parameters(cfg: ModelConfig) -> int:
    """Parameter count without allocating weights (built on the meta device)."""
    with torch.device("meta"), _SkipFills():
        model = build_model(cfg)
    return sum(p.numel() for p in model.parameters())
