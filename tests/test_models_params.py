"""Paper Table 1 architectures build on the meta device with the published parameter counts.

These are plain dicts on purpose (independent of the presets room). What reproduces Table 1:
16 attention heads everywhere; SwiGLU width d_intermediate = 4096 at d 1536, 5504 at d 2048,
2816 at d 1024 (the 2-stage middle level), 0 (no MLP) in the outer m4 encoders/decoders;
Mamba-2 d_state 128, expand 2, headdim 64, d_conv 4; byte vocab 256; the BPE Transformer ties
its GPT-2 embeddings (untied gives 834M instead of 760M).
"""

from __future__ import annotations

import pytest
from hnetbench.config import ModelConfig
from hnetbench.models import count_parameters

MAMBA = dict(
    mamba_d_state=128, mamba_d_conv=4, mamba_expand=2, mamba_headdim=64, mamba_chunk_size=256
)
ONE = dict(ratio_targets=[6.0], attn_num_heads=[16], vocab_size=256)
TWO = dict(ratio_targets=[3.0, 3.0], attn_num_heads=[16], vocab_size=256)

PAPER = {
    "transformer-L": (
        760e6,
        dict(
            arch="isotropic",
            layout="T24",
            d_model=[1536],
            d_intermediate=[4096],
            vocab_size=50257,
            tie_embeddings=True,
            attn_num_heads=[16],
            attn_rotary_dim=[32],
        ),
    ),
    "transformer-XL": (
        1.3e9,
        dict(
            arch="isotropic",
            layout="T24",
            d_model=[2048],
            d_intermediate=[5504],
            vocab_size=50257,
            tie_embeddings=True,
            attn_num_heads=[16],
            attn_rotary_dim=[32],
        ),
    ),
    "hnet-1stage-L": (
        680e6,
        dict(
            layout=["m4", ["T22"], "m4"],
            d_model=[1024, 1536],
            d_intermediate=[0, 4096],
            attn_rotary_dim=[32, 48],
            attn_window=[1024, -1],
            **ONE,
        ),
    ),
    "hnet-2stage-L": (
        870e6,
        dict(
            layout=["m4", ["T1m4", ["T26"], "m4T1"], "m4"],
            d_model=[1024, 1024, 1536],
            d_intermediate=[0, 2816, 4096],
            attn_rotary_dim=[32, 32, 48],
            attn_window=[1024, 1024, -1],
            **TWO,
        ),
    ),
    "hnet-space-L": (
        850e6,
        dict(
            layout=["m4", ["T28"], "m4"],
            d_model=[1024, 1536],
            d_intermediate=[0, 4096],
            chunking="space",
            **ONE,
        ),
    ),
    "hnet-1stage-XL": (
        1.3e9,
        dict(
            layout=["m4", ["T24"], "m4"],
            d_model=[1024, 2048],
            d_intermediate=[0, 5504],
            attn_rotary_dim=[32, 64],
            **ONE,
        ),
    ),
    "hnet-2stage-XL": (
        1.6e9,
        dict(
            layout=["m4", ["T1m4", ["T27"], "m4T1"], "m4"],
            d_model=[1024, 1536, 2048],
            d_intermediate=[0, 4096, 5504],
            attn_rotary_dim=[32, 48, 64],
            **TWO,
        ),
    ),
    "hnet-space-XL": (
        1.6e9,
        dict(
            layout=["m4", ["T31"], "m4"],
            d_model=[1024, 2048],
            d_intermediate=[0, 5504],
            chunking="space",
            **ONE,
        ),
    ),
}


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_parameter_counts(name: str) -> None:
    published, kw = PAPER[name]
    n = count_parameters(ModelConfig(**{**MAMBA, **kw}))
    assert abs(n - published) / published < 0.05, (
        f"{name}: {n / 1e6:.0f}M vs paper {published / 1e6:.0f}M"
    )
