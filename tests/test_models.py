"""Model behaviour: SSD parity, causality, document isolation, cache exactness, losses, errors."""

from __future__ import annotations

import pytest
import torch
from hnetbench.config import ConfigError, ModelConfig
from hnetbench.models import build_model
from hnetbench.models.chunking import ratio_loss, smooth, upsample
from hnetbench.models.generate import generate
from hnetbench.models.mamba2 import ssd_chunked, ssd_naive
from hnetbench.models.routing import space_boundaries

torch.set_num_threads(1)

SMALL = dict(
    vocab_size=64,
    attn_num_heads=[2],
    attn_rotary_dim=[8],
    mamba_d_state=8,
    mamba_headdim=16,
    mamba_expand=2,
    mamba_chunk_size=8,
    d_intermediate=[48],
)


def cfg(**kw) -> ModelConfig:
    merged = {**SMALL, **kw}
    return ModelConfig(**merged)


def iso(layout: str, **kw) -> ModelConfig:
    return cfg(arch="isotropic", layout=layout, d_model=[32], **kw)


def hnet1(**kw) -> ModelConfig:
    base = dict(
        layout=["m1t1", ["T1M1"], "t1m1"],
        d_model=[32, 48],
        d_intermediate=[0, 64],
        ratio_targets=[2.0],
        attn_window=[4, -1],
    )
    return cfg(**{**base, **kw})


def hnet2(**kw) -> ModelConfig:
    base = dict(
        layout=["m1", ["T1m1", ["M1T1"], "m1T1"], "m1"],
        d_model=[32, 32, 48],
        d_intermediate=[0, 40, 64],
        ratio_targets=[2.0, 2.0],
    )
    return cfg(**{**base, **kw})


MODELS = {
    "m": lambda: iso("m2"),
    "M": lambda: iso("M2", mamba_ngroups=2),
    "t": lambda: iso("t2"),
    "T": lambda: iso("T2"),
    "mixed": lambda: iso("m1T1M1t1", attn_window=[5]),
    "hnet1": hnet1,
    "hnet2": hnet2,
}


def make(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(MODELS[name]()).eval()
    # give the zero-initialised residual projections a value so every path carries signal
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("residual.weight") or n.endswith(".pad"):
                p.normal_(0, 0.05)
    return model


# ----------------------------------------------------------------------------- SSD


@pytest.mark.parametrize(
    "L,chunk,resets", [(37, 8, False), (37, 8, True), (5, 16, True), (64, 16, True)]
)
def test_ssd_chunked_matches_naive(L: int, chunk: int, resets: bool) -> None:
    g = torch.Generator().manual_seed(L)
    b, H, P, G, N = 2, 4, 3, 2, 5
    kw = dict(dtype=torch.float64, generator=g)
    x, dt = torch.randn(b, L, H, P, **kw), torch.rand(b, L, H, **kw)
    A = -torch.rand(H, **kw) * 2
    B, C = torch.randn(b, L, G, N, **kw), torch.randn(b, L, G, N, **kw)
    ds = torch.zeros(b, L, dtype=torch.bool)
    if resets:
        ds = torch.rand(b, L, generator=g) < 0.15
    ds[:, 0] = True
    y0, s0 = ssd_naive(x, dt, A, B, C, ds)
    y1, s1 = ssd_chunked(x, dt, A, B, C, chunk, ds.long().cumsum(1))
    torch.testing.assert_close(y1, y0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s1, s0, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- causality


@pytest.mark.parametrize("name", list(MODELS))
def test_causality(name: str) -> None:
    model = make(name)
    torch.manual_seed(1)
    ids = torch.randint(0, 64, (2, 40))
    base = model(ids).logits
    for t in (3, 17, 39):
        ids2 = ids.clone()
        ids2[:, t] = (ids2[:, t] + 7) % 64
        out = model(ids2).logits
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=1e-5)
        assert (out[:, t:] - base[:, t:]).abs().max() > 1e-4  # the change is seen from t on


# ----------------------------------------------------------------------------- packed documents


@pytest.mark.parametrize("name", ["mixed", "M", "hnet1", "hnet2"])
def test_packed_documents_are_isolated(name: str) -> None:
    model = make(name)
    torch.manual_seed(2)
    a, b = torch.randint(0, 64, (1, 23)), torch.randint(0, 64, (1, 30))
    packed = torch.cat([a, b], dim=1)
    doc_start = torch.zeros_like(packed, dtype=torch.bool)
    doc_start[0, 0] = doc_start[0, 23] = True
    out = model(packed, doc_start=doc_start)
    alone_a, alone_b = model(a), model(b)
    torch.testing.assert_close(out.logits[:, :23], alone_a.logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(out.logits[:, 23:], alone_b.logits, rtol=0, atol=1e-4)
    for bp, ba, bb in zip(out.boundaries[:1], alone_a.boundaries[:1], alone_b.boundaries[:1]):
        assert torch.equal(bp[:, :23], ba) and torch.equal(bp[:, 23:], bb)


# the H-Net variants (chunking, downsampling, ablations, 2 stages): packing and cached generation
HNET_VARIANTS = {
    "hnet1": hnet1,
    "hnet2": hnet2,
    "hnet1-ablations": lambda: hnet1(
        smoothing=False, ste=False, router="linear", residual_proj=False, norm_balance=False
    ),
    "hnet1-mean": lambda: hnet1(downsample="mean"),
    "hnet1-max": lambda: hnet1(downsample="max"),
    "hnet1-space": lambda: hnet1(chunking="space", vocab_size=256),
    "hnet2-pool": lambda: hnet2(chunking="pool", pool_size=3),
}


@pytest.mark.parametrize("name", list(HNET_VARIANTS))
def test_rows_packed_for_the_inner_network_equal_the_padded_batch(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full forwards run each inner stage over the rows' chunks packed into one row (no
    padding); the padded batch layout is the reference: same losses, logits, boundaries (in
    the batch layout) and gradients, in float64, with documents starting inside rows."""
    from hnetbench.models import hnet

    torch.manual_seed(3)
    model = build_model(HNET_VARIANTS[name]()).double().train()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("residual.weight") or n.endswith(".pad"):
                p.normal_(0, 0.05)
    vocab = model.cfg.vocab_size
    ids = torch.randint(0, vocab, (3, 41))
    if name == "hnet1-space":  # spaces at different places per row: different chunk counts
        ids[0, ::3], ids[1, ::7] = 32, 32
    tgt = torch.randint(0, vocab, (3, 41))
    doc_start = torch.zeros_like(ids, dtype=torch.bool)
    doc_start[0, 17] = doc_start[2, 5] = doc_start[2, 30] = True
    res = {}
    for pack in (False, True):
        monkeypatch.setattr(hnet, "PACK_ROWS", pack)
        model.zero_grad()
        out = model(ids, targets=tgt, doc_start=doc_start)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        res[pack] = out, grads
    (ref, g_ref), (got, g_got) = res[False], res[True]
    per_row = ref.boundaries[0].sum(1)
    assert per_row.max() > per_row.min()  # rows of different chunk counts: packing drops padding
    torch.testing.assert_close(got.logits, ref.logits, rtol=1e-10, atol=1e-10)
    for key in ("loss", "ar_loss", "ratio_loss"):
        torch.testing.assert_close(getattr(got, key), getattr(ref, key), rtol=1e-10, atol=1e-12)
    assert len(got.boundaries) == len(ref.boundaries)
    for bg, br in zip(got.boundaries, ref.boundaries):
        assert bg.shape == br.shape and torch.equal(bg, br)
    assert g_got.keys() == g_ref.keys()
    for n in g_ref:
        torch.testing.assert_close(g_got[n], g_ref[n], rtol=1e-9, atol=1e-11, msg=n)


def test_rows_differ_in_chunk_counts_so_packing_drops_padding() -> None:
    """The case packing is for: rows cutting different numbers of chunks."""
    from hnetbench.models.lm import unpack_rows

    rows = torch.tensor([0, 0, 0, 2, 2])
    out = unpack_rows(torch.tensor([[1, 2, 3, 4, 5]]), rows, 3)
    assert torch.equal(out, torch.tensor([[1, 2, 3], [0, 0, 0], [4, 5, 0]]))
    assert unpack_rows(torch.ones(2, 4), None, 2).shape == (2, 4)


# ----------------------------------------------------------------------------- cached generation

CACHE_CASES = {**{k: MODELS[k] for k in ("T", "M", "mixed")}, **HNET_VARIANTS}


@pytest.mark.parametrize("name", list(CACHE_CASES))
def test_cached_generation_matches_full_forward(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(CACHE_CASES[name]()).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("residual.weight") or n.endswith(".pad"):
                p.normal_(0, 0.05)
    V = model.cfg.vocab_size
    text = list(b"the cat sat on the mat, and then: 12 dogs ran")
    prompts = (
        [text[:9], text[:21], text[:4]]
        if V == 256
        else [torch.randint(0, V, (n,)).tolist() for n in (9, 21, 4)]
    )
    new, logits = generate(model, prompts, max_new_tokens=7, greedy=True)
    fired = 0
    for i, p in enumerate(prompts):
        full = torch.tensor([p + new[i][:-1]])
        ref = model(full)
        torch.testing.assert_close(logits[i], ref.logits[0, len(p) - 1 :], rtol=0, atol=1e-4)
        if len(ref.boundaries) > 1:
            first_new_chunk = int(ref.boundaries[0][0, : len(p)].sum())
            fired += int(ref.boundaries[1][0, first_new_chunk:].sum())
    if name.startswith("hnet2"):
        assert fired > 0, "the test should exercise inner-stage steps"


def test_generate_sampling_options() -> None:
    model = make("hnet1")
    g = torch.Generator().manual_seed(0)
    out = model.generate(
        [[1, 2, 3], [4]], max_new_tokens=5, temperature=0.8, top_p=0.9, generator=g
    )
    assert [len(o) for o in out] == [5, 5] and all(0 <= t < 64 for o in out for t in o)
    with pytest.raises(ValueError, match="at least one token"):
        model.generate([[]], 3)


# ----------------------------------------------------------------------------- pieces


def test_smoothing_equals_explicit_loop() -> None:
    torch.manual_seed(0)
    z, P = torch.randn(3, 11, 5, dtype=torch.float64), torch.rand(3, 11, dtype=torch.float64)
    P[:, 0] = 1
    ref, prev = torch.empty_like(z), torch.zeros_like(z[:, 0])
    for t in range(11):
        prev = P[:, t, None] * z[:, t] + (1 - P[:, t, None]) * prev
        ref[:, t] = prev
    torch.testing.assert_close(smooth(z, P), ref)
    assert torch.equal(smooth(z, P, enabled=False), z)


def test_upsample_takes_chunk_of_each_position() -> None:
    z = torch.arange(3.0).view(1, 3, 1)
    b = torch.tensor([[1, 0, 0, 1, 1, 0]], dtype=torch.bool)
    assert upsample(z, b).flatten().tolist() == [0, 0, 0, 1, 2, 2]


@pytest.mark.parametrize("N", [2.0, 3.0, 6.0])
def test_ratio_loss_minimum(N: float) -> None:
    L = int(N) * 10
    b = torch.zeros(1, L, dtype=torch.bool)
    b[0, :: int(N)] = True
    p = torch.full((1, L), 1 / N)
    assert abs(float(ratio_loss(b, p, N)) - 1.0) < 1e-6
    assert float(ratio_loss(torch.ones_like(b), torch.ones_like(p), N)) > 1.0


def test_router_gets_gradients() -> None:
    model = make("hnet2")
    model.train()
    ids = torch.randint(0, 64, (2, 32))
    model(ids, targets=ids).loss.backward()
    for stage in (model.backbone, model.backbone.inner):
        assert stage.router.q_proj.weight.grad.abs().sum() > 0
        assert stage.router.k_proj.weight.grad.abs().sum() > 0


def test_space_boundaries_follow_spacebyte() -> None:
    ids = torch.tensor([list("ab cd,  e\u00e9f".encode())])
    # 'a','b',' ','c','d',',',' ',' ','e',0xC3,0xA9,'f': spacelike after non-spacelike at 2, 5, 9
    b = space_boundaries(ids)[0].nonzero().flatten().tolist()
    assert b == [2, 5, 9]


def test_loss_fields_and_stats() -> None:
    model = make("hnet2")
    ids = torch.randint(0, 64, (2, 24))
    targets = ids.clone()
    targets[:, :3] = -100
    out = model(ids, targets=targets)
    assert out.n_targets == 42
    torch.testing.assert_close(out.ar_loss, out.nats_sum / 42)
    torch.testing.assert_close(out.loss, out.ar_loss + 0.03 * out.ratio_loss)
    assert len(out.boundaries) == 2 and out.boundaries[0].shape == (2, 24)
    for key in ("stage0/keep_frac", "stage0/bytes_per_chunk", "stage1/bytes_per_chunk"):
        assert key in out.stats
    assert out.stats["stage1/bytes_per_chunk"] >= out.stats["stage0/bytes_per_chunk"]


def test_param_groups_and_lr_multipliers() -> None:
    model = make("hnet1")
    groups = model.param_groups(0.1, "auto")
    names = {n for n, _ in model.named_parameters()}
    assert sum(len(g["params"]) for g in groups) == len(names)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    for n, p in model.named_parameters():
        if "norm" in n or n.endswith("bias") or n.startswith("embedding"):
            assert id(p) in no_decay, n
    # Eq. 11 with N_0 = 2, D = (32, 48): stage 0 sqrt(4.6 * 48/32), stage 1 sqrt(4.6 / 2)
    mults = {g["name"]: g["lr_mult"] for g in groups}
    assert abs(mults["stage0/decay"] - (4.6 * 1.5) ** 0.5) < 1e-9
    assert abs(mults["stage1/decay"] - (4.6 / 2) ** 0.5) < 1e-9
    emb = model.embedding.weight
    assert any(emb is p and g["name"] == "stage0/no_decay" for g in groups for p in g["params"])
    assert model.lr_multipliers("none") == [1.0, 1.0]
    assert model.lr_multipliers([2.0, 1.0]) == [2.0, 1.0]
    with pytest.raises(ConfigError, match="lr_mult"):
        model.lr_multipliers([1.0])


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("layout", ["T0", "X3", "T", "T2x", "", "2T"])
def test_bad_layout_strings(layout: str) -> None:
    with pytest.raises(ConfigError, match="layout") as e:
        build_model(iso(layout))
    assert "\n" not in str(e.value) and repr(layout) in str(e.value)


@pytest.mark.parametrize("layout", [["m2", ["T2"]], ["m2", "T2", "m2"], [["T2"]], 5])
def test_bad_nested_layouts(layout: object) -> None:
    with pytest.raises(ConfigError, match="layout"):
        build_model(hnet1(layout=layout))


def test_bad_widths_and_lengths() -> None:
    with pytest.raises(ConfigError, match="d_model: layout has 2 level"):
        build_model(hnet1(d_model=[32]))
    with pytest.raises(ConfigError, match="must not decrease"):
        build_model(hnet1(d_model=[48, 32]))
    with pytest.raises(ConfigError, match="d_intermediate"):
        build_model(hnet1(d_intermediate=[0, 0]))
    model = build_model(iso("T1", max_seq_len=16))
    with pytest.raises(ValueError, match="exceeds model.max_seq_len 16") as e:
        model(torch.zeros(1, 17, dtype=torch.long))
    assert "\n" not in str(e.value)


def test_count_parameters_matches_a_real_build() -> None:
    from hnetbench.models import count_parameters

    for c in (hnet2(), iso("m1T1")):
        assert count_parameters(c) == sum(p.numel() for p in build_model(c).parameters())
