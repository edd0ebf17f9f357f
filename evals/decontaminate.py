"""N-gram overlap between evaluation text and the training split (decontamination).

The field's method (GPT-3 App. C; lm-eval's `decontamination/`): an evaluation item is
contaminated if any of its n-grams (n = 13 words) also occurs in the training data. As in
lm-eval's janitor, text is lower-cased and punctuation is ignored: words are runs of letters,
marks, digits and underscores, and each CJK character is a word (Chinese has no spaces).
DNA has no words at all: its units are bases, and 13 bases repeat by chance in a 4 Mbp genome,
so DNA uses 32-grams of bases (4^32 >> genome size: a shared 32-mer is a copy, not chance).

N-grams are hashed to 64 bits (polynomial rolling hash over token ids) and kept in sorted numpy
arrays, so the train split of a corpus costs 8 bytes per n-gram.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import regex

WORD = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}]|[\p{L}\p{N}\p{M}_]+")
SETTINGS = {"dna": ("char", 32)}  # domain -> (unit, n); every other domain: ("word", 13)
DEFAULT = ("word", 13)
_P = np.uint64(0x100000001B3)


def settings_for(domain: str | None) -> tuple[str, int]:
    """(unit, n) used for a domain: DNA 32-grams of bases, everything else 13-grams of words."""
    return SETTINGS.get(domain or "", DEFAULT)


_SPACES = np.array([ord(c) for c in " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680"
                    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
                    "\u200a\u2028\u2029\u202f\u205f\u3000"], dtype=np.uint32)


def tokens(text: str | bytes, unit: str = "word") -> list[str]:
    """Words (see module doc) or characters of `text`, lower-cased."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    text = text.lower()
    return WORD.findall(text) if unit == "word" else [c for c in text if not c.isspace()]


def ngram_hashes(text: str | bytes, unit: str = "word", n: int = 13) -> np.ndarray:
    """64-bit hashes of every n-gram of `text` (empty if it has fewer than n tokens)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if unit == "char":  # code points of the non-space characters, lower-cased
        cps = np.frombuffer(text.lower().encode("utf-32-le"), dtype=np.uint32)
        ids = cps[~np.isin(cps, _SPACES)].astype(np.uint64)
    else:  # Python's str hash: stable within a process, which is all an index needs
        ids = np.fromiter((hash(t) for t in WORD.findall(text.lower())), dtype=np.int64)
        ids = ids.view(np.uint64)
    if len(ids) < n:
        return np.zeros(0, dtype=np.uint64)
    m = len(ids) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _P + ids[j : j + m]
    return h


class NgramIndex:
    """The set of n-gram hashes of a collection of texts (e.g. a corpus's train split)."""

    def __init__(self, texts: Iterable[str | bytes], unit: str = "word", n: int = 13) -> None:
        self.unit, self.n = unit, n
        parts = [ngram_hashes(t, unit, n) for t in texts]
        h = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)
        self.hashes = h[np.concatenate(([True], h[1:] != h[:-1]))] if len(h) else h

    def hits(self, text: str | bytes) -> tuple[int, int]:
        """(n-grams of `text` found in the index, n-grams of `text`)."""
        h = ngram_hashes(text, self.unit, self.n)
        if not len(h) or not len(self.hashes):
            return 0, len(h)
        pos = np.searchsorted(self.hashes, h).clip(max=len(self.hashes) - 1)
        return int((self.hashes[pos] == h).sum()), len(h)

    def overlaps(self, text: str | bytes) -> bool:
        """True if any n-gram of `text` occurs in the index (GPT-3's contamination rule)."""
        return self.hits(text)[0] > 0

    def overlap_rate(self, texts: Sequence[str | bytes]) -> float:
        """Share of all n-grams of `texts` that occur in the index (0.0 if none)."""
        found = total = 0
        for t in texts:
            f, k = self.hits(t)
            found, total = found + f, total + k
        return found / total if total else 0.0


def settings_for_texts(sample: Sequence[str | bytes]) -> tuple[str, int]:
    """DNA settings if every sample text is only bases (ACGTN), else words."""
    def is_dna(t: str | bytes) -> bool:
        b = t if isinstance(t, (bytes, bytearray)) else t.encode("utf-8")
        return bool(b) and not bytes(b).upper().translate(None, b"ACGTN \n")
    return SETTINGS["dna"] if sample and all(is_dna(t) for t in sample) else DEFAULT


def _spans(text: str, unit: str) -> list[tuple[int, int]]:
    """Character span of each token of `text` (the tokens of `tokens`)."""
    if unit == "word":
        return [m.span() for m in WORD.finditer(text.lower())]
    return [(i, i + 1) for i, c in enumerate(text.lower()) if not c.isspace()]


def clean_pieces(text: str, index: NgramIndex, margin: int = 200) -> list[str]:
    """`text` with every n-gram found in `index` cut out, plus `margin` characters each side
    (GPT-3's filter); the pieces in order (the whole text if nothing overlaps)."""
    h = ngram_hashes(text, index.unit, index.n)
    if not len(h) or not len(index.hashes):
        return [text]
    pos = np.searchsorted(index.hashes, h).clip(max=len(index.hashes) - 1)
    hit = np.nonzero(index.hashes[pos] == h)[0]
    if not len(hit):
        return [text]
    spans = _spans(text, index.unit)
    cuts: list[tuple[int, int]] = []
    for i in hit.tolist():
        lo, hi = spans[i][0] - margin, spans[i + index.n - 1][1] + margin
        if cuts and lo <= cuts[-1][1]:
            cuts[-1] = (cuts[-1][0], max(cuts[-1][1], hi))
        else:
            cuts.append((lo, hi))
    pieces, start = [], 0
    for lo, hi in cuts:
        if lo > start:
            pieces.append(text[start:lo])
        start = max(start, hi)
    if start < len(text):
        pieces.append(text[start:])
    return pieces
