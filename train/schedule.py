"""Learning-rate schedules as a multiplier of the base LR, a pure function of the step.

Being a function of the step (not an object with state) keeps resume exact: nothing but the step
needs saving. Each parameter group's LR is `base_lr * group["lr_mult"] * lr_factor(step, ...)`.
"""

from __future__ import annotations

import math

SCHEDULES = ("wsd", "cosine", "constant")


def phase_lengths(total: int, warmup_frac: float, decay_frac: float) -> tuple[int, int]:
    """(warmup, decay) step counts: rounded fractions of `total`, at least 1 when the fraction is
    positive, and never together more than `total`."""
    warmup = max(1, round(warmup_frac * total)) if warmup_frac > 0 else 0
    decay = max(1, round(decay_frac * total)) if decay_frac > 0 else 0
    warmup = min(warmup, total)
    decay = min(decay, total - warmup)
    return warmup, decay


def lr_factor(
    step: int,
    total: int,
    schedule: str = "wsd",
    warmup_frac: float = 0.1,
    decay_frac: float = 0.2,
) -> float:
    """Multiplier of the base LR for the update with 0-based index `step` out of `total` updates.

    With W warmup and D decay steps (`phase_lengths`) and S = `total`:

    - warmup (all schedules), t < W:  f = (t + 1) / W  — linear, reaching 1 on the last warmup
      update and never 0 (a zero-LR first update would be wasted).
    - `wsd` (warmup-stable-decay, the H-Net paper's schedule): f = 1 for W <= t < S - D, then the
      "1 - sqrt" cooldown of Hägele et al. (2024), which the paper calls inverse-square-root decay:
      f = 1 - sqrt((t - (S - D) + 1) / (D + 1)). It falls from just under 1 on the first decay
      update to 1 - sqrt(D / (D + 1)) on the last, reaching exactly 0 at the virtual step S
      (no floor; the final update still moves the weights).
    - `cosine`: after warmup f = 0.5 * (1 + cos(pi * (t - W + 1) / (S - W + 1))), also 0 at S.
      `decay_frac` is ignored.
    - `constant`: f = 1 after warmup.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"train.schedule: expected one of {SCHEDULES}, got {schedule!r}")
    if total <= 0:
        return 1.0
    warmup, decay = phase_lengths(total, warmup_frac, decay_frac if schedule == "wsd" else 0.0)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = (step - warmup + 1) / (total - warmup + 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    start = total - decay
    if step < start:
        return 1.0
    return max(0.0, 1.0 - math.sqrt(min(step - start + 1, decay + 1) / (decay + 1)))
