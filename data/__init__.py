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
    "prepared_documents",
    "split_of",
]


def build_loader(data_cfg, split: str, seed: int = 0, tokenizer=None, rank: int = 0,
                 world_size: int = 1):
    """Packed batches of `split` (see loader.PackedLoader); imported lazily (needs torch)."""
    from hnetbench.data.loader import build_loader as _build

    return _build(data_cfg, split, seed, tokenizer, rank, world_size)


def prepared_documents(data_cfg, split: str, tokenizer=None):
    """Documents of `split` read back from the prepared shards (lazily; see loader)."""
    from hnetbench.data.loader import prepared_documents as _docs

    return _docs(data_cfg, split, tokenizer)
