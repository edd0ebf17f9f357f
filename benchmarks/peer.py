"""A peer side by side: PyPI `h-net-dynamic-chunking` against our H-Net on an equivalent small
1-stage config (attention encoder/main/decoder), train-step time in the same process, as a ratio.

    pip install h-net-dynamic-chunking   # not a dependency of hnetbench
    python benchmarks/peer.py [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table, text_bytes, time_fn, write_json  # noqa: E402


class PeerLM(nn.Module):
    """The peer's HNet between our byte embedding and LM head, trained with next-byte loss."""

    def __init__(self, d: int, d_inner: int, depth: int, heads: int) -> None:
        super().__init__()
        from h_net_dynamic_chunking import HNet
        from x_transformers import Decoder

        # Modules, not dicts: the peer's dict path passes a kwarg newer x-transformers rejects.
        self.embed = nn.Embedding(256, d)
        self.hnet = HNet(
            encoder=Decoder(dim=d, depth=depth, heads=heads),
            network=Decoder(dim=d_inner, depth=depth, heads=heads),
            decoder=Decoder(dim=d, depth=depth, heads=heads),
            dim=d, dim_inner=d_inner,
        )
        self.head = nn.Linear(d, 256, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out, aux = self.hnet(self.embed(x))[:2]
        logits = self.head(out)
        return nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()) + aux


def main(argv: list[str] | None = None) -> int:
    from hnetbench.config import ModelConfig
    from hnetbench.models import build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--d-inner", type=int, default=192)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-bytes", type=int, default=512)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    try:
        import h_net_dynamic_chunking  # noqa: F401
    except ImportError:
        print("peer.py: the peer package is not installed: pip install h-net-dynamic-chunking")
        return 2
    raw = torch.tensor(list(text_bytes(args.batch * (args.seq_bytes + 1))))
    ids = raw.view(args.batch, args.seq_bytes + 1)
    x, y = ids[:, :-1], ids[:, 1:]
    lay = f"T{args.depth}"
    ours = build_model(ModelConfig(
        arch="hnet", layout=[lay, [lay], lay], d_model=[args.d, args.d_inner],
        d_intermediate=[4 * args.d, 4 * args.d_inner], attn_num_heads=[args.heads],
        attn_rotary_dim=[16], ratio_targets=[6.0]))
    torch.manual_seed(0)
    peer = PeerLM(args.d, args.d_inner, args.depth, args.heads)
    rows = []
    for name, model, loss_fn in [
        ("hnetbench", ours, lambda: ours(x, targets=y).loss),
        ("h-net-dynamic-chunking", peer, lambda: peer(x, y)),
    ]:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(loss_fn=loss_fn, opt=opt) -> None:
            loss_fn().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        sec = time_fn(step, repeats=3, warmup=1)
        rows.append({"model": name, "params": sum(p.numel() for p in model.parameters()),
                     "step_s": sec, "bytes_per_s": args.batch * args.seq_bytes / sec})
    rows[1]["ours_speedup"] = rows[1]["step_s"] / rows[0]["step_s"]
    print_table(rows, ["model", "params", "step_s", "bytes_per_s", "ours_speedup"])
    write_json(args.json, {"machine": machine(), "config": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
