"""`hnetbench convert`: goombalab/hnet checkpoints -> hnetbench runs.

tests/data/hnet_reference_keys.json holds the exact state-dict key names and shapes the
reference's own classes produce for a tiny config and for every released config (written by
scripts/reference_parity.py --write-keys from a goombalab/hnet checkout; see its "_how").
Checkpoints in that format are synthesised here with seeded random weights.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from hnetbench.cli import main as cli_main
from hnetbench.config import ConfigError
from hnetbench.models import build_model, count_parameters
from hnetbench.models.convert import (
    convert_state_dict,
    load_into,
    load_reference_weights,
    map_key,
    model_config_from_reference,
)
from hnetbench.train import load_checkpoint

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
FIXTURE = json.loads((ROOT / "tests" / "data" / "hnet_reference_keys.json").read_text())
CONFIGS = FIXTURE["configs"]
RELEASED = [n for n in CONFIGS if n != "tiny"]


def _script():
    spec = importlib.util.spec_from_file_location("reference_parity",
                                                  ROOT / "scripts" / "reference_parity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny_state() -> dict[str, torch.Tensor]:
    return _script().synthetic_reference_state(CONFIGS["tiny"]["keys"])


@pytest.mark.parametrize("name", RELEASED)
def test_released_checkpoint_layouts_map_onto_our_models(name: str) -> None:
    """Every key of the released checkpoint has exactly one counterpart of the right shape."""
    entry = CONFIGS[name]
    cfg = model_config_from_reference(entry["config"])
    meta = {k: torch.empty(v, device="meta") for k, v in entry["keys"].items()}
    sd = convert_state_dict(meta, cfg)
    with torch.device("meta"):
        model = build_model(cfg)
    load_into(model, sd, name)  # raises on any missing/unexpected key or shape mismatch
    assert len(sd) == len(meta)  # a bijection: nothing dropped, nothing invented
    n_ref = sum(torch.Size(v).numel() for v in entry["keys"].values())
    # ours adds one embedding row and one head row (BOS 256)
    assert count_parameters(cfg) == n_ref + 2 * cfg.d_model[0]


def test_released_configs_translate_faithfully() -> None:
    cfg = model_config_from_reference(CONFIGS["hnet_2stage_XL"]["config"])
    assert cfg.layout == ["m4", ["T1m4", ["T27"], "m4T1"], "m4"]
    assert cfg.attn_window == [1024, 1024, -1]  # flash-attn window 1023 = 1024 positions
    assert cfg.d_intermediate == [0, 4096, 5504] and cfg.ratio_targets == [3.0, 3.0]
    assert (cfg.mamba_headdim, cfg.mamba_ngroups, cfg.mamba_d_state) == (64, 1, 128)
    assert cfg.vocab_size == 257 and cfg.init == "reference"
    one = model_config_from_reference(CONFIGS["hnet_1stage_L"]["config"])
    assert one.ratio_targets == [6.0] and one.attn_rotary_dim == [32, 48]
    # the reference's SwiGLU rounds its width up to a multiple of 128
    assert model_config_from_reference(CONFIGS["tiny"]["config"]).d_intermediate == [0, 128, 256]


def test_layout_differences_are_applied() -> None:
    state = _tiny_state()
    cfg = model_config_from_reference(CONFIGS["tiny"]["config"])
    sd = convert_state_dict(state, cfg)
    # router: the reference's q (applied to t-1) is our k (applied to t-1)
    assert torch.equal(sd["backbone.router.k_proj.weight"],
                       state["backbone.routing_module.q_proj_layer.weight"])
    assert torch.equal(sd["backbone.inner.router.q_proj.weight"],
                       state["backbone.main_network.routing_module.k_proj_layer.weight"])
    # SwiGLU: [value; gate] there, [gate; value] here
    ref_fc1 = state["backbone.main_network.main_network.main_network.layers.1.mlp.fc1.weight"]
    ours_fc1 = sd["backbone.inner.inner.main.layers.1.mlp.fc1.weight"]
    h = ref_fc1.shape[0] // 2
    assert torch.equal(ours_fc1[:h], ref_fc1[h:]) and torch.equal(ours_fc1[h:], ref_fc1[:h])
    # BOS 256 reads the reference's BOS 254; the inner stage's pad lives on the outer stage
    assert torch.equal(sd["embedding.weight"][256], state["embeddings.weight"][254])
    assert torch.equal(sd["head.weight"][:256], state["lm_head.weight"])
    assert torch.equal(sd["backbone.inner.pad"],
                       state["backbone.main_network.main_network.pad_dimension"])
    assert torch.equal(sd["backbone.residual.bias"], state["backbone.residual_proj.bias"])
    assert map_key("backbone.main_network.encoder.rmsnorm.weight", 3) == (
        "backbone.inner.encoder.norm.weight")
    assert map_key("backbone.encoder.layers.0.mixer.rotary_emb.inv_freq", 3) is None


def test_convert_command_makes_a_run_every_command_reads(tmp_path, capsys) -> None:
    state = _tiny_state()
    cfg_path, weights = tmp_path / "tiny.json", tmp_path / "tiny.pt"
    cfg_path.write_text(json.dumps(CONFIGS["tiny"]["config"]))
    torch.save(state, weights)
    out = tmp_path / "run"
    argv = ["convert", "--config", str(cfg_path), "--weights", str(weights), "--out", str(out)]
    assert cli_main(argv) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(out)
    model, run_cfg, tok = load_checkpoint(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["family"] == "hnet-2stage" and summary["params"] == sum(
        p.numel() for p in model.parameters())
    assert (out / "config.yaml").is_file()  # a run directory: eval results land beside it
    assert run_cfg.model.d_model == [64, 64, 96] and tok.bos_id == 256
    # the checkpoint holds exactly the converted weights
    expected = convert_state_dict(state, run_cfg.model)
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    ids = torch.tensor([[256] + list(b"converted models score bytes")])
    nll = model(ids[:, :-1], targets=ids[:, 1:]).ar_loss
    assert torch.isfinite(nll)
    assert cli_main(["generate", "--checkpoint", str(out), "--prompt", "Hi", "--greedy",
                     "--max-new-tokens", "5"]) == 0
    assert cli_main(argv) == 2  # an existing run is not overwritten without --force
    assert "already holds a run" in capsys.readouterr().err
    assert cli_main(argv + ["--force"]) == 0


def test_converted_model_matches_recorded_reference_outputs() -> None:
    """Log-probabilities and boundaries the reference's own forward (float64, CPU) produced for
    the tiny synthetic checkpoint, recorded by scripts/reference_parity.py --write-keys."""
    rec = FIXTURE["tiny_reference_outputs"]
    cfg = model_config_from_reference(CONFIGS["tiny"]["config"])
    model = build_model(cfg)
    load_into(model, convert_state_dict(_tiny_state(), cfg), "tiny")
    model = model.to(torch.float64).eval()
    ids = torch.tensor(rec["ids"])
    ids = torch.where(ids == 254, torch.full_like(ids, 256), ids)  # the reference's BOS -> ours
    with torch.no_grad():
        out = model(ids)
    logp = out.logits[..., :256].log_softmax(-1)
    got = logp[:, :-1].gather(-1, ids[:, 1:, None].clamp(max=255))[..., 0]
    # measured 2e-6: even in float64 the reference keeps fp32 islands (A = -exp(A_log.float()),
    # the dechunk EMA's p.float(), mamba_ssm's fp32 dA_cumsum); a mapping error is O(0.1)
    torch.testing.assert_close(got, torch.tensor(rec["next_byte_logprob"], dtype=torch.float64),
                               rtol=0, atol=2e-5)
    for s, b in enumerate(rec["boundaries"]):
        n = len(b[0])
        assert out.boundaries[s][:, :n].tolist() == b, f"stage {s}"


def test_weights_only_load_reads_omegaconf_containers_as_standins(tmp_path) -> None:
    """The released .pt pickles hold omegaconf ListConfig objects; weights_only=True reads them
    as inert stand-ins without importing omegaconf."""
    fake = types.ModuleType("omegaconf.listconfig")

    class ListConfig:  # like omegaconf's: a container object pickled as NEWOBJ + BUILD
        def __init__(self, content: list) -> None:
            self._content = content

    ListConfig.__module__, ListConfig.__qualname__ = "omegaconf.listconfig", "ListConfig"
    fake.ListConfig = ListConfig
    parent = types.ModuleType("omegaconf")
    parent.listconfig = fake
    sys.modules["omegaconf"], sys.modules["omegaconf.listconfig"] = parent, fake
    try:
        lc = ListConfig([1.0, 2.0])
        lc.meta = {"ref_type": "x"}
        path = tmp_path / "ckpt.pt"
        torch.save({"model": {"embeddings.weight": torch.ones(2, 3)}, "lr_mult": lc}, path)
    finally:
        del sys.modules["omegaconf.listconfig"], sys.modules["omegaconf"]
    sd = load_reference_weights(path)
    assert list(sd) == ["embeddings.weight"] and torch.equal(sd["embeddings.weight"],
                                                             torch.ones(2, 3))


def test_bad_inputs_are_one_line(tmp_path) -> None:
    tiny = CONFIGS["tiny"]["config"]
    cases = [
        ({**tiny, "n_layers": 3}, "unknown key 'n_layers'"),
        ({**tiny, "vocab_size": 512}, "vocab_size: expected 256"),
        ({**tiny, "arch_layout": ["m1", "T1"]}, "arch_layout"),
        ({**tiny, "d_model": [64, 96]}, "d_model: expected 3 widths"),
        ({**tiny, "ssm_cfg": {"d_state": [16, 32, 16]}}, "ssm_cfg.d_state"),
    ]
    for cfg, msg in cases:
        with pytest.raises(ConfigError, match=msg) as e:
            model_config_from_reference(cfg)
        assert "\n" not in str(e.value)
    cfg = model_config_from_reference(tiny)
    state = _tiny_state()
    bad = dict(state)
    bad["backbone.encoder.layers.0.mixer.in_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(ConfigError, match=r"in_proj.weight: shape \(3, 3\)"):
        load_into(build_model(cfg), convert_state_dict(bad, cfg), "w.pt")
    missing = {k: v for k, v in state.items() if "residual_proj.bias" not in k}
    with pytest.raises(ConfigError, match="missing"):
        load_into(build_model(cfg), convert_state_dict(missing, cfg), "w.pt")
    with pytest.raises(ConfigError, match="no hnetbench counterpart"):
        convert_state_dict({**state, "backbone.extra.weight": torch.zeros(1)}, cfg)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="junk.pt: cannot load with weights_only=True") as e:
        load_reference_weights(junk)
    assert "\n" not in str(e.value)
