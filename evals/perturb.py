"""Character-level text perturbations of the paper's Table 3 (protocol of BLT, Pagnoni et al.).

All five act on Unicode characters (code points), never on bytes, so the result is always
valid UTF-8. Random ones draw from a generator seeded by (seed, perturbation, text), so the same
string is always perturbed the same way -- in every process, whatever PYTHONHASHSEED -- which
keeps a multiple-choice task's gold string and its choice list consistent.

Defaults follow BLT's description of its noised HellaSwag:
  antspeak   : upper-case, then every character separated by one space
               ("Hi you" -> "H I   Y O U": a space between words becomes " _ " = three spaces)
  drop       : delete `drop_frac` (0.1) of the characters, positions chosen at random
  randomcase : upper-case `randomcase_frac` (0.5) of the characters, chosen at random
               (`randomcase_lower_rest=True` also lower-cases all the others, BLT's variant)
  repeat     : pick `repeat_frac` (0.2) of the characters; each one then occurs
               2..`repeat_max` (4) times in a row (count uniform)
  uppercase  : str.upper()
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, fields, replace

PERTURBATIONS: tuple[str, ...] = ("antspeak", "drop", "randomcase", "repeat", "uppercase")


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


def _rng(text: str, name: str, seed: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{name}\x00{text}".encode("utf-8", "surrogatepass"))
    return random.Random(int.from_bytes(digest.digest()[:8], "little"))


def _pick(n: int, frac: float, rng: random.Random) -> set[int]:
    """Exactly round(frac * n) distinct positions (a fixed fraction, not a noisy one)."""
    return set(rng.sample(range(n), round(frac * n))) if n else set()


def antspeak(text: str) -> str:
    return " ".join(text.upper())


def drop(text: str, frac: float, rng: random.Random) -> str:
    gone = _pick(len(text), frac, rng)
    return "".join(c for i, c in enumerate(text) if i not in gone)


def randomcase(text: str, frac: float, rng: random.Random, lower_rest: bool = False) -> str:
    up = _pick(len(text), frac, rng)
    return "".join(
        c.upper() if i in up else (c.lower() if lower_rest else c) for i, c in enumerate(text)
    )


def repeat(text: str, frac: float, max_times: int, rng: random.Random) -> str:
    chosen = _pick(len(text), frac, rng)
    out = []
    for i, c in enumerate(text):
        out.append(c * rng.randint(2, max_times) if i in chosen else c)
    return "".join(out)


def perturb(text: str, name: str, cfg: PerturbConfig | None = None) -> str:
    """Apply perturbation `name` (one of PERTURBATIONS) to `text`; deterministic."""
    cfg = cfg or PerturbConfig()
    if name == "uppercase":
        return text.upper()
    if name == "antspeak":
        return antspeak(text)
    rng = _rng(text, name, cfg.seed)
    if name == "drop":
        return drop(text, cfg.drop_frac, rng)
    if name == "randomcase":
        return randomcase(text, cfg.randomcase_frac, rng, cfg.randomcase_lower_rest)
    if name == "repeat":
        return repeat(text, cfg.repeat_frac, cfg.repeat_max, rng)
    raise ValueError(f"unknown perturbation '{name}' (expected one of {', '.join(PERTURBATIONS)})")
