"""Real data connectors: local files (jsonl, parquet, txt, FASTA; optionally gz/xz/bz2) and
Hugging Face `datasets` streaming (FineWeb-Edu, a Chinese web corpus, a code corpus).

Every connector yields documents as UTF-8 `bytes`; splits are assigned afterwards by hash
(`corpus.split_documents`), so the same file always gives the same train/val/test.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import hashlib
import io
import json
import lzma
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from hnetbench.config import DataConfig
from hnetbench.data.corpus import DataError, atomic_write_bytes, cache_dir

COMPRESSED = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}
FORMATS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".txt": "txt",
    ".text": "txt",
    ".fa": "fasta",
    ".fasta": "fasta",
    ".fna": "fasta",
    ".fas": "fasta",
}
NON_ACGT = re.compile(rb"[^ACGT]+")

# Named Hugging Face sources (data.path may name one of these or any dataset id).
HF_ALIASES: dict[str, dict[str, Any]] = {
    # the paper's English data: FineWeb-Edu (10B-token sample config)
    "fineweb-edu": {
        "path": "HuggingFaceFW/fineweb-edu",
        "name": "sample-10BT",
        "text_field": "text",
    },
    # Chinese: OpenCSG's Fineweb-Edu-Chinese V2.1, score 4-5 folder (~46B tokens)
    "fineweb-edu-zh": {
        "path": "opencsg/Fineweb-Edu-Chinese-V2.1",
        "data_dir": "4_5",
        "text_field": "text",
    },
    # code: cleaned Python files from GitHub
    "codeparrot": {"path": "codeparrot/codeparrot-clean", "text_field": "content"},
}
LOCAL_BUILDERS = ("json", "parquet", "text", "csv", "arrow")  # `json:/path/*.jsonl` style


# ----------------------------------------------------------------------------- local files


def file_format(path: Path) -> tuple[str, str | None]:
    """(format, compression suffix) from the file name, e.g. x.fa.gz -> ("fasta", ".gz")."""
    suffixes = [s.lower() for s in path.suffixes]
    comp = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSED else None
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise DataError(
            f"{path}: unknown file type (expected .jsonl, .parquet, .txt or .fa/.fasta/.fna, "
            "optionally .gz/.xz/.bz2)"
        )
    return fmt, comp


def _open(path: Path, comp: str | None) -> IO[bytes]:
    return COMPRESSED[comp](path, "rb") if comp else open(path, "rb")


def _utf8(data: bytes, where: str) -> bytes:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text (byte offset {e.start})") from None
    return data


def read_jsonl(path: Path, comp: str | None, text_field: str = "text") -> Iterator[bytes]:
    with _open(path, comp) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except UnicodeDecodeError:
                raise DataError(f"{path}: line {i}: not UTF-8 text") from None
            except ValueError:
                raise DataError(f"{path}: line {i}: not valid JSON") from None
            if not isinstance(rec, dict) or not isinstance(rec.get(text_field), str):
                raise DataError(
                    f"{path}: line {i}: expected an object with a string '{text_field}' field"
                )
            if rec[text_field]:
                yield rec[text_field].encode("utf-8")


def read_parquet(path: Path, text_field: str = "text") -> Iterator[bytes]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable parquet file ({type(e).__name__})") from None
    if text_field not in pf.schema_arrow.names:
        raise DataError(
            f"{path}: no column '{text_field}' (columns: {', '.join(pf.schema_arrow.names)})"
        )
    for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if text:
                yield (
                    text.encode("utf-8") if isinstance(text, str) else _utf8(bytes(text), str(path))
                )


def read_txt(path: Path, comp: str | None) -> Iterator[bytes]:
    """A text file is one document."""
    with _open(path, comp) as f:
        data = f.read()
    if data:
        yield _utf8(data, str(path))


def read_fasta(path: Path, comp: str | None, window: int = 16384) -> Iterator[bytes]:
    """HG38-style FASTA -> uppercase ACGT windows of `window` bp.

    Headers start records; lines are wrapped; lowercase (soft-masked) bases are upper-cased; runs
    of N (or any non-ACGT code) end a segment. Each segment is cut into windows; a final piece
    shorter than window/8 is dropped (mostly assembly gap edges).
    """
    if window < 8:
        raise DataError(f"data.fasta_window: expected >= 8 bp, got {window}")
    buf = bytearray()

    def flush() -> Iterator[bytes]:
        if len(buf) >= max(1, window // 8):
            yield bytes(buf)
        buf.clear()

    seen_header = False
    with _open(path, comp) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith(b">"):
                seen_header = True
                yield from flush()
                continue
            if not seen_header:
                raise DataError(f"{path}: not FASTA (expected a '>' header line first)")
            parts = NON_ACGT.split(line.upper())
            for k, part in enumerate(parts):
                if k > 0:  # a gap (N run) lies between parts
                    yield from flush()
                while part:
                    take = window - len(buf)
                    buf += part[:take]
                    part = part[take:]
                    if len(buf) == window:
                        yield bytes(buf)
                        buf.clear()
    yield from flush()


def expand_paths(spec: str | None) -> list[Path]:
    """data.path for source=files: files, folders (recursive) or globs, comma-separated."""
    if not spec:
        raise DataError("data.path: required for data.source=files (a file, folder or glob)")
    out: list[Path] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))
            found = [q for q in found if _known(q)]
            if not found:
                raise DataError(f"{p}: folder has no .jsonl/.parquet/.txt/.fasta files")
            out += found
        elif p.is_file():
            out.append(p)
        elif any(c in item for c in "*?["):
            hits = sorted(Path(h) for h in glob.glob(str(p), recursive=True) if Path(h).is_file())
            if not hits:
                raise DataError(f"{item}: glob matches no files")
            out += hits
        else:
            raise DataError(f"{p}: file not found")
    return out


def _known(p: Path) -> bool:
    try:
        file_format(p)
        return True
    except DataError:
        return False


# what a corrupt or truncated .gz/.xz/.bz2 raises from inside the decompressor
DECOMPRESS_ERRORS = (EOFError, OSError, lzma.LZMAError, zlib.error)


def iter_file(path: Path, text_field: str = "text", fasta_window: int = 16384) -> Iterator[bytes]:
    """Documents of one file; a corrupt compressed file is one DataError naming it."""
    fmt, comp = file_format(path)
    try:
        yield from _iter_file(path, fmt, comp, text_field, fasta_window)
    except DECOMPRESS_ERRORS as e:
        what = (getattr(e, "strerror", None) or str(e)).strip().splitlines()
        what = what[0] if what else type(e).__name__
        if comp and not isinstance(e, (FileNotFoundError, PermissionError)):
            raise DataError(f"{path}: corrupt or truncated {comp[1:]} file ({what})") from None
        raise DataError(f"{path}: unreadable ({what})") from None


def _iter_file(
    path: Path, fmt: str, comp: str | None, text_field: str, fasta_window: int
) -> Iterator[bytes]:
    if fmt == "jsonl":
        yield from read_jsonl(path, comp, text_field)
    elif fmt == "parquet":
        if comp:
            raise DataError(
                f"{path}: compressed parquet is not supported (parquet compresses itself)"
            )
        yield from read_parquet(path, text_field)
    elif fmt == "txt":
        yield from read_txt(path, comp)
    else:
        yield from read_fasta(path, comp, fasta_window)


def read_files(
    spec: str | None, text_field: str = "text", fasta_window: int = 16384, max_bytes: int = 0
) -> list[bytes]:
    """All documents of data.path (stopping after max_bytes of documents when > 0)."""
    docs, total = [], 0
    for path in expand_paths(spec):
        for doc in iter_file(path, text_field, fasta_window):
            docs.append(doc)
            total += len(doc)
            if max_bytes and total >= max_bytes:
                return docs
    if not docs:
        raise DataError(f"{spec}: no documents found")
    return docs


# ----------------------------------------------------------------------------- Hugging Face


def hf_spec(data_cfg: DataConfig, require_cap: bool = True) -> dict[str, Any]:
    """load_dataset arguments for data.path (an alias, a dataset id, or `json:/files/*.jsonl`).

    `require_cap`: a remote dataset read into memory needs data.max_bytes (`data prepare`
    streams it to disk instead and passes False)."""
    path = data_cfg.path
    if not path:
        raise DataError(
            "data.path: required for data.source=hf (a dataset id or one of: "
            f"{', '.join(HF_ALIASES)})"
        )
    spec: dict[str, Any] = {
        "path": path,
        "name": data_cfg.hf_config,
        "text_field": data_cfg.text_field,
    }
    if path in HF_ALIASES:
        spec = dict(HF_ALIASES[path])
        if data_cfg.hf_config:
            spec["name"] = data_cfg.hf_config
    builder, sep, files = path.partition(":")
    if sep and builder in LOCAL_BUILDERS:
        if not files:
            raise DataError(f"data.path '{path}': expected {builder}:FILES after the builder name")
        spec.update(path=builder, data_files=files)
    elif require_cap and data_cfg.max_bytes <= 0:
        raise DataError(
            f"data.max_bytes: set a byte cap (> 0) to stream the Hugging Face dataset '{path}'"
        )
    return spec


def iter_hf(
    path: str,
    name: str | None = None,
    text_field: str = "text",
    data_dir: str | None = None,
    data_files: str | list[str] | None = None,
    split: str = "train",
    streaming: bool = True,
) -> Iterator[bytes]:
    """Stream documents from `datasets.load_dataset(path, name, ...)` (never materialises it)."""
    try:
        import datasets
    except ImportError:
        raise DataError(
            "data.source=hf needs the `datasets` package (pip install datasets)"
        ) from None
    kwargs: dict[str, Any] = {"split": split, "streaming": streaming}
    if name:
        kwargs["name"] = name
    if data_dir:
        kwargs["data_dir"] = data_dir
    if data_files:
        kwargs["data_files"] = data_files
    try:
        ds = datasets.load_dataset(path, **kwargs)
    except Exception as e:  # network, auth, bad name: all user-facing
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"hf dataset '{path}': {msg}") from None
    for i, rec in enumerate(ds):
        text = rec.get(text_field)
        if not isinstance(text, str):
            raise DataError(f"hf dataset '{path}': record {i} has no string field '{text_field}'")
        if text:
            yield text.encode("utf-8")


def hf_documents(data_cfg: DataConfig) -> list[bytes]:
    """Documents of a HF source, up to data.max_bytes; remote ones are cached on disk once read."""
    spec = hf_spec(data_cfg)
    text_field = spec.pop("text_field")
    local = spec["path"] in LOCAL_BUILDERS
    key = hashlib.sha256(
        json.dumps([spec, text_field, data_cfg.max_bytes], sort_keys=True).encode()
    ).hexdigest()[:16]
    cached = cache_dir() / "hf" / f"{key}.jsonl.gz"
    if not local and cached.is_file():
        return list(read_jsonl(cached, ".gz"))
    docs, total = [], 0
    for doc in iter_hf(text_field=text_field, **spec):
        docs.append(doc)
        total += len(doc)
        if data_cfg.max_bytes and total >= data_cfg.max_bytes:
            break
    if not docs:
        raise DataError(f"hf dataset '{data_cfg.path}': no documents")
    if not local:
        blob = io.BytesIO()
        with gzip.GzipFile(fileobj=blob, mode="wb", compresslevel=1, mtime=0) as g:
            for d in docs:
                g.write(
                    json.dumps({"text": d.decode("utf-8")}, ensure_ascii=False).encode() + b"\n"
                )
        atomic_write_bytes(cached, blob.getvalue())
    return docs
