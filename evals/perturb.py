"""Character-level text perturbations of the paper's Table 3 (protocol of BLT, Pagnoni et al.).

All act on user-perceived characters -- extended grapheme clusters (Unicode UAX #29, `regex`'s
\\X) -- never on bytes or lone code points, so a combining mark stays on its letter, a ZWJ emoji
sequence or a flag stays whole, and the result is always valid UTF-8. Random ones draw from a
generator seeded by (seed, perturbation, text), so the same string is always perturbed the same
way -- in every process, whatever PYTHONHASHSEED -- which keeps a multiple-choice task's gold
string and its choice list consistent. Exact definitions beside the paper's and BLT's:
docs/EVALS.md.

  antspeak      : upper-case, then every character separated by one space
                  ("Hi you" -> "H I   Y O U": a space between words becomes " _ " = 3 spaces)
  drop          : delete round(`drop_frac` (0.1) * n) characters, positions chosen at random
  randomcase    : upper-case round(`randomcase_frac` (0.5) * n) characters chosen at random,
                  leave the others as they are (the paper's wording: "random characters
                  upper-cased")
  randomcase_blt: BLT's variant: the chosen characters upper-cased, all others lower-cased
                  (also reachable as randomcase with `randomcase_lower_rest=True`)
  repeat        : pick round(`repeat_frac` (0.2) * n) characters; each then occurs
                  2..`repeat_max` (4) times in a row (count uniform)
  uppercase     : str.upper()
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, fields, replace

import regex

PERTURBATIONS: tuple[str, ...] = ("antspeak", "drop", "randomcase", "repeat", "uppercase")
VARIANTS: tuple[str, ...] = ("randomcase_blt",)  # offered by name, not in the default set
ALL_PERTURBATIONS: tuple[str, ...] = PERTURBATIONS + VARIANTS
_GRAPHEME = regex.compile(r"\X")


@dataclass(frozen=True)
class PerturbConfig:
    seed: int = 0
    drop_frac: float = 0.1
    randomcase_frac: float = 0.5
    randomcase_lower_rest: bool = False
    repeat_frac: float = 0.2
    repeat_max: int = 4

    def __post_init__(self) -> None:
        for name in ("drop_frac", "randomcase_frac", "repeat_frac"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"perturbation {name}={v!r}: expected a fraction in [0, 1]")
        if self.repeat_max < 2:
            raise ValueError(f"perturbation repeat_max={self.repeat_max!r}: expected >= 2")

    @classmethod
    def from_overrides(cls, items: list[str] | None) -> PerturbConfig:
        """Parse `key=value` strings (e.g. from the CLI) into a config."""
        cfg = cls()
        types = {f.name: f.type for f in fields(cls)}
        for item in items or []:
            key, sep, raw = item.partition("=")
            if not sep or key not in types:
                raise ValueError(
                    f"perturbation option '{item}': expected key=value with key in "
                    f"{', '.join(types)}"
                )
            tp = types[key]
            try:
                if tp in ("bool", bool):
                    if raw.lower() not in ("true", "false", "1", "0"):
                        raise ValueError
                    value = raw.lower() in ("true", "1")
                elif tp in ("int", int):
                    value = int(raw)
                else:
                    value = float(raw)
            except ValueError:
                raise ValueError(f"perturbation option '{item}': bad value for {key}") from None
            cfg = replace(cfg, **{key: value})
        return cfg


def graphemes(text: str) -> list[str]:
    """Extended grapheme clusters of `text` (what a reader counts as characters)."""
    return _GRAPHEME.findall(text)


def _rng(text: str, name: str, seed: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{name}\x00{text}".encode("utf-8", "surrogatepass"))
    return random.Random(int.from_bytes(digest.digest()[:8], "little"))


def _pick(n: int, frac: float, rng: random.Random) -> set[int]:
    """Exactly round(frac * n) distinct positions (a fixed fraction, not a noisy one)."""
    return set(rng.sample(range(n), round(frac * n))) if n else set()


def _apply(text: str, name: str, cfg: PerturbConfig) -> tuple[str, int, int]:
    """(perturbed text, characters changed, characters) -- characters = grapheme clusters."""
    gs = graphemes(text)
    n = len(gs)
    if name == "uppercase":
        return text.upper(), sum(g.upper() != g for g in gs), n
    if name == "antspeak":
        up = graphemes(text.upper())
        return " ".join(up), (min(n, n - 1 + sum(g.upper() != g for g in gs)) if n else 0), n
    if name not in ALL_PERTURBATIONS:
        raise ValueError(f"unknown perturbation '{name}' "
                         f"(expected one of {', '.join(ALL_PERTURBATIONS)})")
    rng = _rng(text, "randomcase" if name == "randomcase_blt" else name, cfg.seed)
    if name == "drop":
        gone = _pick(n, cfg.drop_frac, rng)
        return "".join(g for i, g in enumerate(gs) if i not in gone), len(gone), n
    if name == "repeat":
        chosen = _pick(n, cfg.repeat_frac, rng)
        out = [g * rng.randint(2, cfg.repeat_max) if i in chosen else g for i, g in enumerate(gs)]
        return "".join(out), len(chosen), n
    # randomcase / randomcase_blt
    lower_rest = cfg.randomcase_lower_rest or name == "randomcase_blt"
    up = _pick(n, cfg.randomcase_frac, rng)
    out = [g.upper() if i in up else (g.lower() if lower_rest else g) for i, g in enumerate(gs)]
    return "".join(out), sum(a != b for a, b in zip(out, gs)), n


def perturb(text: str, name: str, cfg: PerturbConfig | None = None) -> str:
    """Apply perturbation `name` (one of ALL_PERTURBATIONS) to `text`; deterministic."""
    return _apply(text, name, cfg or PerturbConfig())[0]


def change_count(text: str, name: str, cfg: PerturbConfig | None = None) -> tuple[int, int]:
    """(characters the perturbation changes, characters of `text`), in grapheme clusters."""
    _, changed, n = _apply(text, name, cfg or PerturbConfig())
    return changed, n


# legacy helpers (code-point level callers may still import them)
def antspeak(text: str) -> str:
    return perturb(text, "antspeak")
