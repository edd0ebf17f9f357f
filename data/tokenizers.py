"""Tokenizers: raw bytes, a byte-level BPE trained on the training split, and GPT-2 (tiktoken,
from a local ranks file only).

All three share one interface: `encode(bytes|str) -> list[int]`, `decode(ids) -> bytes`,
`vocab_size`, `bos_id`, `name`, `token_bytes(id) -> bytes` (b"" for specials). `decode` joins
`token_bytes`, so decode(encode(x)) == x byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from hnetbench.config import DataConfig
from hnetbench.data.corpus import DataError, atomic_write_bytes, cache_dir, corpus_documents

BPE_SAMPLE_BYTES = 2_000_000  # BPE trains on the first 2 MB of the training split (fast, fixed)
BPE_VERSION = 1  # bump when the training recipe changes (invalidates the cache)
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_ENV = "HNETBENCH_GPT2_BPE"


def _as_bytes(text: bytes | str) -> bytes:
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


def _as_text(text: bytes | str, name: str) -> str:
    if isinstance(text, str):
        return text
    try:
        return bytes(text).decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{name} tokenizer: input is not UTF-8 text (byte offset {e.start})"
        ) from None


class Tokenizer:
    name: str
    vocab_size: int
    bos_id: int
    _table: list[bytes]  # id -> bytes it stands for

    def encode(self, text: bytes | str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: list[bytes]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> bytes:
        table = self._table
        try:
            return b"".join(table[int(i)] for i in ids)
        except IndexError:
            bad = next(int(i) for i in ids if not 0 <= int(i) < len(table))
            raise DataError(
                f"{self.name} tokenizer: id {bad} out of range [0, {len(table)})"
            ) from None

    def token_bytes(self, i: int) -> bytes:
        return self._table[i]

    def token_lengths(self) -> list[int]:
        """len(token_bytes(i)) for every id (used to count scored bytes)."""
        return [len(b) for b in self._table]


class ByteTokenizer(Tokenizer):
    """ids 0..255 are the bytes themselves; 256 is BOS. Any byte string round-trips."""

    def __init__(self) -> None:
        self.name, self.vocab_size, self.bos_id = "bytes", 257, 256
        self._table = [bytes([i]) for i in range(256)] + [b""]

    def encode(self, text: bytes | str) -> list[int]:
        return list(_as_bytes(text))


# ----------------------------------------------------------------------------- trained BPE


def _byte_to_unicode() -> dict[int, str]:
    """The byte-level alphabet (printable stand-in character per byte) used by ByteLevel BPE."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class BPETokenizer(Tokenizer):
    """Byte-level BPE (HF `tokenizers`): no normaliser, no prefix space, so it is lossless."""

    def __init__(self, hf_tokenizer, name: str = "bpe") -> None:
        self._tok = hf_tokenizer
        # "<bos>" written inside a document is text, not the BOS id
        hf_tokenizer.encode_special_tokens = True
        self.name = name
        self.vocab_size = hf_tokenizer.get_vocab_size()
        self.bos_id = hf_tokenizer.token_to_id("<bos>")
        inverse = {c: b for b, c in _byte_to_unicode().items()}
        vocab = hf_tokenizer.get_vocab()
        table = [b""] * self.vocab_size
        for tok, i in vocab.items():
            if i != self.bos_id:
                table[i] = bytes(inverse[c] for c in tok)
        self._table = table

    def encode(self, text: bytes | str) -> list[int]:
        return self._tok.encode(_as_text(text, self.name), add_special_tokens=False).ids

    def encode_batch(self, texts: list[bytes]) -> list[list[int]]:
        strs = [_as_text(t, self.name) for t in texts]
        return [e.ids for e in self._tok.encode_batch(strs, add_special_tokens=False)]


def _new_bpe_model():
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(docs: list[bytes], vocab_size: int) -> BPETokenizer:
    """Train a byte-level BPE of `vocab_size` ids (BOS = 0, the 256 bytes, then merges)."""
    from tokenizers import pre_tokenizers, trainers

    if vocab_size < 258:
        raise DataError(
            f"data.bpe_vocab_size: expected >= 258 (BOS + 256 bytes + merges), got {vocab_size}"
        )
    tok = _new_bpe_model()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<bos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # 1024-character pieces: the trainer is quadratic-ish in the length of a pre-token, and DNA
    # windows are one 16 kbp "word"; cutting text this often barely changes the merges.
    texts = [
        t[i : i + 1024] for d in docs for t in [_as_text(d, "bpe")] for i in range(0, len(t), 1024)
    ]
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return BPETokenizer(tok)


def bpe_sample(docs: list[bytes], cap: int = BPE_SAMPLE_BYTES) -> list[bytes]:
    """The first `cap` bytes of the training documents (whole documents, the last one cut)."""
    out, total = [], 0
    for d in docs:
        take = d[: cap - total]
        # cut on a character boundary so the sample stays valid UTF-8
        take = take.decode("utf-8", errors="ignore").encode("utf-8")
        if take:
            out.append(take)
        total += len(take)
        if total >= cap:
            break
    return out


def load_or_train_bpe(data_cfg: DataConfig) -> BPETokenizer:
    """Trained BPE for the config's training split, cached under cache_dir()/bpe/."""
    from tokenizers import Tokenizer as HFTokenizer

    sample = bpe_sample(corpus_documents(data_cfg, "train"))
    h = hashlib.sha256()
    for d in sample:
        h.update(hashlib.sha256(d).digest())
    key = f"{h.hexdigest()[:16]}-v{data_cfg.bpe_vocab_size}-r{BPE_VERSION}"
    path = cache_dir() / "bpe" / f"{key}.json"
    name = f"bpe{data_cfg.bpe_vocab_size}"
    if path.is_file():
        try:
            return BPETokenizer(HFTokenizer.from_file(str(path)), name)
        except Exception:  # a corrupt cache entry: retrain and overwrite it
            pass
    tok = train_bpe(sample, data_cfg.bpe_vocab_size)
    tok.name = name
    atomic_write_bytes(path, tok._tok.to_str().encode("utf-8"))
    return tok


# ----------------------------------------------------------------------------- GPT-2 (tiktoken)


class TiktokenTokenizer(Tokenizer):
    """GPT-2 BPE via tiktoken, built from local ranks; BOS is <|endoftext|> (50256 for GPT-2)."""

    def __init__(self, ranks: dict[bytes, int], name: str = "gpt2") -> None:
        import tiktoken

        bos = max(ranks.values()) + 1
        self._enc = tiktoken.Encoding(
            name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": bos}
        )
        self.name, self.vocab_size, self.bos_id = name, bos + 1, bos
        table = [b""] * self.vocab_size
        for tok, i in ranks.items():
            table[i] = tok
        self._table = table

    def encode(self, text: bytes | str) -> list[int]:
        # special-token text inside a document is ordinary text, never a control token
        return self._enc.encode(_as_text(text, self.name), disallowed_special=())

    def encode_batch(self, texts: list[bytes]) -> list[list[int]]:
        strs = [_as_text(t, self.name) for t in texts]
        return self._enc.encode_ordinary_batch(strs, num_threads=1)


def read_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """GPT-2 ranks from a tiktoken `.tiktoken` file or a folder with vocab.bpe + encoder.json."""
    p = Path(path).expanduser()
    try:
        if p.is_dir():
            vocab, enc = p / "vocab.bpe", p / "encoder.json"
            if not (vocab.is_file() and enc.is_file()):
                raise DataError(f"{p}: expected vocab.bpe and encoder.json in this folder")
            from tiktoken.load import data_gym_to_mergeable_bpe_ranks

            return data_gym_to_mergeable_bpe_ranks(str(vocab), str(enc))
        ranks = {}
        for n, line in enumerate(p.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                tok, rank = line.split()
                ranks[base64.b64decode(tok, validate=True)] = int(rank)
            except ValueError:
                raise DataError(f"{p}: line {n}: expected '<base64 token> <rank>'") from None
    except FileNotFoundError:
        raise DataError(f"{p}: GPT-2 BPE file not found") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise DataError(f"{p}: ranks must be 0..{len(ranks) - 1} without gaps")
    return ranks


def _gpt2_cached_files() -> Path | None:
    """tiktoken's own cache of the GPT-2 files, if an earlier online run left them there."""
    import tempfile

    root = Path(
        os.environ.get("TIKTOKEN_CACHE_DIR") or Path(tempfile.gettempdir()) / "data-gym-cache"
    )
    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    names = {}
    for fname in ("vocab.bpe", "encoder.json"):
        f = root / hashlib.sha1((base + fname).encode()).hexdigest()
        if not f.is_file():
            return None
        names[fname] = f
    return names["vocab.bpe"].parent if names else None


def load_gpt2(path: str | None = None) -> TiktokenTokenizer:
    """GPT-2 from data.tokenizer_path or $HNETBENCH_GPT2_BPE; never downloads."""
    path = path or os.environ.get(GPT2_ENV)
    if path:
        return TiktokenTokenizer(read_ranks(path))
    cached = _gpt2_cached_files()
    if cached is not None:
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
        vocab = cached / hashlib.sha1((base + "vocab.bpe").encode()).hexdigest()
        enc = cached / hashlib.sha1((base + "encoder.json").encode()).hexdigest()
        return TiktokenTokenizer(data_gym_to_mergeable_bpe_ranks(str(vocab), str(enc)))
    raise DataError(
        "gpt2 tokenizer: no local GPT-2 BPE file (set data.tokenizer_path or "
        f"${GPT2_ENV} to a gpt2.tiktoken file or a folder with vocab.bpe + encoder.json)"
    )


# ----------------------------------------------------------------------------- entry points


def get_tokenizer(data_cfg: DataConfig) -> Tokenizer:
    kind = data_cfg.tokenizer
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "bpe":
        return load_or_train_bpe(data_cfg)
    if kind == "gpt2":
        return load_gpt2(data_cfg.tokenizer_path)
    raise DataError(f"data.tokenizer: unknown tokenizer '{kind}' (expected bytes|bpe|gpt2)")


def encode_document(tok: Tokenizer, doc: bytes | str) -> list[int]:
    """[BOS] + tokens of one document (what the loader and the evaluators feed a model)."""
    return [tok.bos_id] + tok.encode(doc)


def bytes_per_token(tok: Tokenizer, docs: list[bytes]) -> float:
    """Document bytes per (non-special) token over `docs`."""
    n_tokens = sum(len(ids) for ids in tok.encode_batch(docs))
    n_bytes = sum(len(d) for d in docs)
    return n_bytes / max(1, n_tokens)
