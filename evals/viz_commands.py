"""`hnetbench viz boundaries`: draw a checkpoint's chunk boundaries on texts (paper Figs. 4, 16).

    hnetbench viz boundaries --checkpoint RUN --out figs/            # en/zh/code/dna samples
    hnetbench viz boundaries --checkpoint RUN --text "Hello" --perturb randomcase --out figs/

Writes boundaries_<name>.png and boundaries_<name>.html per text; with --perturb the perturbed
text is drawn beside the clean one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SAMPLE_BYTES = 160  # bytes of a test document drawn per domain sample


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="viz_command", metavar="{boundaries}")
    sub.required = True
    p = sub.add_parser("boundaries", help="render chunk boundaries of each stage on a text")
    p.add_argument("--checkpoint", required=True, help="run dir, ckpt/ dir or checkpoint dir")
    p.add_argument("--text", help="text to draw (default: a test-split sample per --domains)")
    p.add_argument("--domains", default="en,zh,code,dna",
                   help="domains to sample when --text is not given")
    p.add_argument("--perturb", help="also draw this perturbation of the text beside it "
                   "(antspeak|drop|randomcase|repeat|uppercase)")
    p.add_argument("--width", type=int, default=40, help="characters per line")
    p.add_argument("--out", required=True, help="output directory")


def domain_sample(domain: str, n_bytes: int = SAMPLE_BYTES) -> str:
    """The start of the first non-trivial test document of a domain, cut on a character."""
    from hnetbench.data import load_documents

    docs = load_documents(domain, "test")
    doc = max(docs[:20], key=len)
    return doc[:n_bytes].decode("utf-8", errors="ignore").strip()


def main(args: argparse.Namespace) -> int:
    from hnetbench.cli import CLIError
    from hnetbench.evals.boundaries import chunk_starts, render_html, render_png
    from hnetbench.evals.perturb import PERTURBATIONS, perturb
    from hnetbench.train import load_checkpoint

    if args.perturb and args.perturb not in PERTURBATIONS:
        raise CLIError(f"--perturb: unknown '{args.perturb}' (expected {', '.join(PERTURBATIONS)})")
    if args.text is not None and not args.text:
        raise CLIError("--text: empty text")
    model, _, tok = load_checkpoint(args.checkpoint)
    if args.text is not None:
        texts = {"text": args.text}
    else:
        texts = {d.strip(): domain_sample(d.strip()) for d in args.domains.split(",") if d.strip()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        versions = [("clean", text)]
        if args.perturb:
            versions.append((args.perturb, perturb(text, args.perturb)))
        try:
            panels = [(f"{name} ({lab})", t, chunk_starts(model, tok, t)) for lab, t in versions]
        except ValueError as e:
            raise CLIError(str(e)) from None
        info = render_png(panels, out / f"boundaries_{name}.png", width=args.width)
        render_html(panels, out / f"boundaries_{name}.html")
        print(f"wrote {out / f'boundaries_{name}.png'} and .html"
              + (f"  ({info['note']})" if info["note"] else ""))
    return 0
