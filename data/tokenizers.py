"""Tokenizers: raw bytes, a byte-level BPE or a SentencePiece model trained on the training
split, GPT-2 and Llama-3 (tiktoken, from local ranks files only), and any local HF tokenizer.json.

All share one interface: `encode(bytes|str) -> list[int]`, `decode(ids) -> bytes`,
`vocab_size`, `bos_id`, `name`, `token_bytes(id) -> bytes` (b"" for specials), `identity()` (a
stable string naming the exact encoding, for caches and manifests). `decode` joins
`token_bytes`, so decode(encode(x)) == x byte for byte; tokenizers whose library could normalise
text (SentencePiece, HF files) check that on every encode and raise a DataError otherwise.
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
    _identity_blob: bytes | None = None  # the serialised model, when the table is not enough

    def identity(self) -> str:
        """`<name>-<hash>`: the same string iff the same ids for every input (the hash covers
        the serialised model, or the id -> bytes table and BOS for table-only tokenizers)."""
        cached = self.__dict__.get("_identity")
        if cached is None:
            h = hashlib.sha256(f"{self.name}|{self.vocab_size}|{self.bos_id}|".encode())
            if self._identity_blob is not None:
                h.update(self._identity_blob)
            else:
                for b in self._table:
                    h.update(len(b).to_bytes(4, "little") + b)
            cached = self.__dict__["_identity"] = f"{self.name}-{h.hexdigest()[:16]}"
        return cached

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

    def identity(self) -> str:
        return "bytes"

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
        self._identity_blob = hf_tokenizer.to_str().encode("utf-8")

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
    """A tiktoken BPE built from local ranks (GPT-2 by default; Llama-3 via `load_llama3`).
    Special tokens take the ids after the ranks; BOS is one of them (<|endoftext|> for GPT-2)."""

    def __init__(
        self,
        ranks: dict[bytes, int],
        name: str = "gpt2",
        pattern: str = GPT2_PATTERN,
        specials: list[str] | None = None,
        bos: str = "<|endoftext|>",
    ) -> None:
        import tiktoken

        specials = specials or [bos]
        first = max(ranks.values()) + 1
        special_ids = {t: first + i for i, t in enumerate(specials)}
        self._enc = tiktoken.Encoding(
            name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_ids
        )
        self.name, self.vocab_size, self.bos_id = name, first + len(specials), special_ids[bos]
        table = [b""] * self.vocab_size
        for tok, i in ranks.items():
            table[i] = tok
        self._table = table
        blob = hashlib.sha256(pattern.encode() + b"\0" + "\0".join(specials).encode())
        for tok, _rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            blob.update(len(tok).to_bytes(4, "little") + tok)
        self._identity_blob = blob.digest()

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


# ----------------------------------------------------------------------------- Llama-3 (tiktoken)

# Meta's Llama-3 split pattern and special tokens (meta-llama/llama3 tokenizer.py), written here so
# that only the ranks file (`tokenizer.model`, base64 token + rank per line) is needed.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>",
    "<|reserved_special_token_3|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|reserved_special_token_4|>",
    "<|eot_id|>",
] + [f"<|reserved_special_token_{i}|>" for i in range(5, 256 - 5)]
LLAMA3_VOCAB = 128_000 + len(LLAMA3_SPECIALS)  # 128256 ids with the released ranks file
LLAMA3_ENV = "HNETBENCH_LLAMA3_TOKENIZER"


def load_llama3(path: str | None = None) -> TiktokenTokenizer:
    """Llama-3 from data.tokenizer_path or $HNETBENCH_LLAMA3_TOKENIZER (the ranks file
    `tokenizer.model`, or a folder holding it or original/tokenizer.model); never downloads."""
    path = path or os.environ.get(LLAMA3_ENV)
    if not path:
        raise DataError(
            f"llama3 tokenizer: no ranks file (set data.tokenizer_path or ${LLAMA3_ENV} to "
            "Llama-3's tokenizer.model, the tiktoken file shipped with the weights)"
        )
    p = Path(path).expanduser()
    if p.is_dir():
        found = [f for f in (p / "tokenizer.model", p / "original" / "tokenizer.model")
                 if f.is_file()]
        if not found:
            raise DataError(f"{p}: expected tokenizer.model (or original/tokenizer.model) here")
        p = found[0]
    return TiktokenTokenizer(
        read_ranks(p), "llama3", LLAMA3_PATTERN, LLAMA3_SPECIALS, "<|begin_of_text|>"
    )


# ----------------------------------------------------------------------------- SentencePiece

SP_VERSION = 1  # bump when the SentencePiece training recipe changes (invalidates the cache)
# SentencePiece trains on the first 500 kB of the training split: unigram training is slow on
# text without spaces (DNA: about a minute per 300 kB on a loaded 2-core box)
SP_SAMPLE_BYTES = 500_000
SP_META = "\u2581"  # SentencePiece's stand-in for a space
SP_TYPES = ("unigram", "bpe")


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model made lossless: byte pieces <0xNN> stand for their byte, the meta
    symbol for a space, unknown/control pieces for nothing; a literal U+2581 in the text (which
    SentencePiece would turn into a space) is encoded as its three byte pieces."""

    def __init__(self, proto: bytes, name: str, where: str = "sentencepiece model") -> None:
        import sentencepiece as spm

        try:
            self._sp = spm.SentencePieceProcessor(model_proto=proto)
        except Exception as e:  # the library raises RuntimeError/OSError with a long message
            first = (str(e).splitlines() or [""])[0]
            raise DataError(f"{where}: not a SentencePiece model ({first})") from None
        sp = self._sp
        self.name, self.vocab_size = name, sp.get_piece_size()
        self._where = where
        table = []
        byte_ids: dict[int, int] = {}
        for i in range(self.vocab_size):
            piece = sp.id_to_piece(i)
            if sp.is_byte(i):
                b = int(piece[3:5], 16)
                byte_ids[b] = i
                table.append(bytes([b]))
            elif sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                table.append(b"")
            else:
                table.append(piece.replace(SP_META, " ").encode("utf-8"))
        missing = [b for b in range(256) if b not in byte_ids]
        if missing:
            raise DataError(f"{where}: needs byte_fallback (no <0x{missing[0]:02X}> piece), "
                            "or some bytes could never be encoded")
        self._table = table
        self._meta_ids = [byte_ids[b] for b in SP_META.encode("utf-8")]
        bos = sp.bos_id()
        if bos < 0:  # no BOS piece: use the first control piece, else fail
            bos = next((i for i in range(self.vocab_size) if sp.is_control(i)), -1)
        if bos < 0:
            raise DataError(f"{where}: the model has no BOS or control piece to mark documents")
        self.bos_id = bos
        self._identity_blob = proto

    def _encode_str(self, text: str) -> list[int]:
        parts = text.split(SP_META)
        ids = self._sp.encode(parts, out_type=int, num_threads=1) if text else [[]]
        out = list(ids[0])
        for p in ids[1:]:
            out += self._meta_ids
            out += p
        return out

    def _checked(self, data: bytes, ids: list[int]) -> list[int]:
        table = self._table
        if b"".join(table[i] for i in ids) != data:
            raise DataError(
                f"{self._where}: encoding is not lossless on this text (the model normalises "
                "it: normalization rule, dummy prefix or whitespace removal); train one with "
                "data.tokenizer=sentencepiece and no data.tokenizer_path"
            )
        return ids

    def encode(self, text: bytes | str) -> list[int]:
        s = _as_text(text, self.name)
        return self._checked(_as_bytes(text), self._encode_str(s))

    def encode_batch(self, texts: list[bytes]) -> list[list[int]]:
        return [self.encode(t) for t in texts]


def _sp_coverage(texts: list[str], vocab_size: int) -> float:
    """SentencePiece's character_coverage (0.9995 by default), lowered so that the characters
    it must keep use at most half the pieces left after the bytes: with thousands of Chinese
    characters a 1k vocabulary is otherwise refused; rarer characters fall back to bytes."""
    from collections import Counter

    counts = sorted(Counter(c for t in texts for c in t).values(), reverse=True)
    room = max(1, (vocab_size - 258) // 2)
    if len(counts) <= room:
        return 0.9995
    covered = sum(counts[:room]) / max(1, sum(counts))
    return min(0.9995, max(0.98, covered - 1e-4))  # the library refuses less than 0.98


def train_sentencepiece(docs: list[bytes], vocab_size: int, model_type: str = "unigram") -> bytes:
    """Train a lossless SentencePiece model (serialised proto): identity normalisation, no dummy
    prefix, whitespace kept, byte_fallback on; ids: 0 <unk>, 1 <bos>, 2..257 the bytes, pieces."""
    import io

    import sentencepiece as spm

    if model_type not in SP_TYPES:
        raise DataError(f"data.sp_model_type: expected unigram|bpe, got '{model_type}'")
    if vocab_size < 300:
        raise DataError(f"data.bpe_vocab_size: expected >= 300 for sentencepiece (unk, BOS, "
                        f"256 byte pieces and merges), got {vocab_size}")
    # 1024-character pieces, as for the BPE (long DNA "sentences" would be skipped otherwise)
    texts = [
        t[i : i + 1024] for d in docs for t in [_as_text(d, "sentencepiece")]
        for i in range(0, len(t), 1024)
    ]
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size,
            model_type=model_type, byte_fallback=True, normalization_rule_name="identity",
            add_dummy_prefix=False, remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True, split_digits=False,
            character_coverage=_sp_coverage(texts, vocab_size),
            unk_id=0, bos_id=1, eos_id=-1, pad_id=-1, bos_piece="<bos>",
            hard_vocab_limit=False, max_sentence_length=1 << 16, num_threads=1,
            minloglevel=2, input_sentence_size=0, shuffle_input_sentence=False,
        )
    except RuntimeError as e:
        msg = (str(e).splitlines() or [""])[0]
        if "smaller than required_chars" in msg:
            raise DataError(
                f"data.bpe_vocab_size {vocab_size} is too small for sentencepiece on this corpus: "
                f"the characters covering 98% of its text need more pieces ({msg.split('. ')[-2]})"
            ) from None
        raise DataError(f"sentencepiece training failed: {msg}") from None
    return buf.getvalue()


def load_or_train_sentencepiece(data_cfg: DataConfig) -> SentencePieceTokenizer:
    """data.tokenizer_path's .model if set, else a model trained on the training split (its
    first SP_SAMPLE_BYTES) and cached under cache_dir()/sentencepiece/."""
    if data_cfg.tokenizer_path:
        p = Path(data_cfg.tokenizer_path).expanduser()
        if not p.is_file():
            raise DataError(f"{p}: SentencePiece .model file not found (data.tokenizer_path)")
        return SentencePieceTokenizer(p.read_bytes(), f"sentencepiece-{p.stem}", str(p))
    kind, vocab = data_cfg.sp_model_type, data_cfg.bpe_vocab_size
    if kind not in SP_TYPES:
        raise DataError(f"data.sp_model_type: expected unigram|bpe, got '{kind}'")
    sample = bpe_sample(corpus_documents(data_cfg, "train"), SP_SAMPLE_BYTES)
    h = hashlib.sha256()
    for d in sample:
        h.update(hashlib.sha256(d).digest())
    path = cache_dir() / "sentencepiece" / f"{h.hexdigest()[:16]}-{kind}{vocab}-r{SP_VERSION}.model"
    name = f"sentencepiece-{kind}{vocab}"
    if path.is_file():
        try:
            return SentencePieceTokenizer(path.read_bytes(), name, str(path))
        except DataError:  # a corrupt cache entry: retrain and overwrite it
            pass
    proto = train_sentencepiece(sample, vocab, kind)
    atomic_write_bytes(path, proto)
    return SentencePieceTokenizer(proto, name, str(path))


# ----------------------------------------------------------------------------- HF tokenizer.json

HF_BOS_NAMES = ("<|begin_of_text|>", "<s>", "<bos>", "<|bos|>", "<|endoftext|>", "[CLS]")


class HFFileTokenizer(Tokenizer):
    """Any local Hugging Face tokenizer.json. Token -> bytes: the byte-level alphabet when every
    piece is written in it (GPT-2 / Llama-3 style), else SentencePiece style (<0xNN> bytes, U+2581
    for a space). Special tokens stand for no bytes; BOS is the first of HF_BOS_NAMES present, or
    one id appended after the vocabulary. Every encode is checked to be lossless."""

    def __init__(self, path: str | os.PathLike) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        p = Path(path).expanduser()
        if p.is_dir():
            p = p / "tokenizer.json"
        if not p.is_file():
            raise DataError(f"{p}: HF tokenizer.json not found (data.tokenizer_path)")
        blob = p.read_bytes()
        try:
            tok = HFTokenizer.from_str(blob.decode("utf-8"))
        except Exception as e:
            raise DataError(f"{p}: not a HF tokenizer.json ({str(e).splitlines()[0]})") from None
        tok.encode_special_tokens = True  # "<s>" inside a document is text
        self._tok, self._where, self.name = tok, str(p), "hf"
        vocab = tok.get_vocab(with_added_tokens=True)
        n = max(vocab.values()) + 1
        specials = {a.content for a in tok.get_added_tokens_decoder().values() if a.special}
        inverse = {c: b for b, c in _byte_to_unicode().items()}
        plain = [t for t in vocab if t not in specials]
        byte_level = all(c in inverse for t in plain for c in t)
        table = [b""] * n
        for t, i in vocab.items():
            if t in specials:
                continue
            if byte_level:
                table[i] = bytes(inverse[c] for c in t)
            elif len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                table[i] = bytes([int(t[3:5], 16)])
            else:
                table[i] = t.replace(SP_META, " ").encode("utf-8")
        bos = next((vocab[b] for b in HF_BOS_NAMES if b in vocab), None)
        if bos is None:
            bos, table = n, table + [b""]
        self._table, self.vocab_size, self.bos_id = table, len(table), bos
        self._identity_blob = blob

    def _checked(self, data: bytes, ids: list[int]) -> list[int]:
        if b"".join(self._table[i] for i in ids) != data:
            raise DataError(
                f"{self._where}: this tokenizer is not lossless on the text (normaliser, prefix "
                "space or unknown tokens); the suite needs decode(encode(x)) == x byte for byte"
            )
        return ids

    def encode(self, text: bytes | str) -> list[int]:
        ids = self._tok.encode(_as_text(text, self.name), add_special_tokens=False).ids
        return self._checked(_as_bytes(text), ids)

    def encode_batch(self, texts: list[bytes]) -> list[list[int]]:
        strs = [_as_text(t, self.name) for t in texts]
        encs = self._tok.encode_batch(strs, add_special_tokens=False)
        return [self._checked(_as_bytes(t), e.ids) for t, e in zip(texts, encs)]


# ----------------------------------------------------------------------------- entry points


TOKENIZERS = ("bytes", "bpe", "sentencepiece", "gpt2", "llama3", "hf")


def get_tokenizer(data_cfg: DataConfig) -> Tokenizer:
    kind = data_cfg.tokenizer
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "bpe":
        return load_or_train_bpe(data_cfg)
    if kind == "sentencepiece":
        return load_or_train_sentencepiece(data_cfg)
    if kind == "gpt2":
        return load_gpt2(data_cfg.tokenizer_path)
    if kind == "llama3":
        return load_llama3(data_cfg.tokenizer_path)
    if kind == "hf":
        if not data_cfg.tokenizer_path:
            raise DataError("data.tokenizer hf: set data.tokenizer_path to a local tokenizer.json")
        return HFFileTokenizer(data_cfg.tokenizer_path)
    raise DataError(f"data.tokenizer: unknown tokenizer '{kind}' (expected {'|'.join(TOKENIZERS)})")


def vocab_size_of(data_cfg: DataConfig) -> int:
    """Ids the config's tokenizer will have, without training it: data.bpe_vocab_size for the
    trained ones (an upper bound for sentencepiece), the published size for gpt2/llama3; files
    given by data.tokenizer_path (sentencepiece, hf) are read."""
    kind = data_cfg.tokenizer
    if kind == "bytes":
        return 257
    if kind == "bpe" or (kind == "sentencepiece" and not data_cfg.tokenizer_path):
        return data_cfg.bpe_vocab_size
    if kind == "gpt2":
        return 50257
    if kind == "llama3":
        return LLAMA3_VOCAB
    return get_tokenizer(data_cfg).vocab_size


def encode_document(tok: Tokenizer, doc: bytes | str) -> list[int]:
    """[BOS] + tokens of one document (what the loader and the evaluators feed a model)."""
    return [tok.bos_id] + tok.encode(doc)


def bytes_per_token(tok: Tokenizer, docs: list[bytes]) -> float:
    """Document bytes per (non-special) token over `docs`."""
    n_tokens = sum(len(ids) for ids in tok.encode_batch(docs))
    n_bytes = sum(len(d) for d in docs)
    return n_bytes / max(1, n_tokens)
