"""Corpora, connectors, tokenizers and the packing loader (see docs/INTERFACES.md)."""

from hnetbench.data.corpus import (
    DataError,
    corpus_documents,
    list_domains,
    load_documents,
    split_of,
)
from hnetbench.data.tokenizers import Tokenizer, encode_document, get_tokenizer

__all__ = [
    "DataError",
    "Tokenizer",
    "build_loader",
    "corpus_documents",
    "encode_document",
    "get_tokenizer",
    "list_domains",
    "load_documents",
    "split_of",
]


def build_loader(data_cfg, split: str, seed: int = 0, tokenizer=None):
    """Packed batches of `split` (see loader.PackedLoader); imported lazily (needs torch)."""
    from hnetbench.data.loader import build_loader as _build

    return _build(data_cfg, split, seed, tokenizer)
