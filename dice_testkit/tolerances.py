"""Tolerances derived from float32 arithmetic, for comparisons of runs that sum in different orders.

Two runs of the same training that differ only in how a sum is ordered (1 rank against 2 ranks, a
batch split into groups) are not bitwise equal, and must not be compared with a guessed rtol: a
guess that a reordering can trip makes the suite fail at random. The bounds here follow the
standard worst-case error of recursive summation (Higham, "Accuracy and Stability of Numerical
Algorithms", 2nd ed., section 4.2): a float32 sum of n terms, in any order, is within
gamma_n * sum|terms| of the exact sum, gamma_n = n*u / (1 - n*u), u = 2**-24. Real errors are
usually near sqrt(n)*u, so this worst case leaves headroom for the second-order effects named below.
"""

from __future__ import annotations

import torch

UNIT_ROUNDOFF = 2.0**-24  # float32
ADAM_EPS = 1e-8  # torch.optim.AdamW's default, which dice_core.training uses
ADAM_BETA2 = 0.999


def summation_error(n_terms: int) -> float:
    """gamma_n: the relative worst-case error of a float32 sum of n_terms terms, in any order."""
    nu = n_terms * UNIT_ROUNDOFF
    if nu >= 0.5:
        raise ValueError(f"a float32 sum of {n_terms} terms has no useful error bound")
    return nu / (1.0 - nu)


def adam_tolerances(exp_avg_sq: torch.Tensor, weight: torch.Tensor, lr: float, steps: int, n_terms: int,
                    batch_size: int) -> dict[str, torch.Tensor]:
    """Per-element bounds on how far two AdamW runs may drift apart when their gradients differ only
    by summation order. Returns tolerances for the weight, exp_avg and exp_avg_sq.

    The gradient of each element is a float32 sum of n_terms products; its rounding error is at most
    gamma_n * S, where S = sum|terms|. S is bounded by batch_size times the largest gradient magnitude
    in the tensor (sqrt of the bias-corrected second moment): the batch mean cannot hide terms larger
    than that unless the per-sample gradients cancel by more than batch_size, which a model at
    initialisation does not do.

    AdamW's update lr * m_hat / (sqrt(v_hat) + eps) turns a gradient error d into an update error of
    at most lr * d / (sqrt(v_hat) + eps): tiny for elements with a real gradient, large for elements
    whose gradient is near eps (there a rounding-sized change moves the update by a visible fraction
    of lr). So the weight tolerance is per element, and each step can add its share.
    """
    v_hat = exp_avg_sq.double() / (1.0 - ADAM_BETA2**steps)
    g_max = float(v_hat.max().sqrt()) if v_hat.numel() else 0.0
    gradient_error = summation_error(n_terms) * batch_size * g_max
    update_error = lr * gradient_error / (v_hat.sqrt() + ADAM_EPS)
    weight = steps * (update_error + UNIT_ROUNDOFF * weight.double().abs())
    return {
        "weight": weight.clamp(max=2.0 * steps * lr),  # Adam never moves an element further than this
        "exp_avg": torch.full_like(v_hat, steps * gradient_error),
        "exp_avg_sq": torch.full_like(v_hat, steps * 2.0 * g_max * gradient_error),
    }


def assert_within(got: torch.Tensor, want: torch.Tensor, tolerance: torch.Tensor, name: str) -> float:
    """Elementwise |got - want| <= tolerance; returns the largest used fraction of the tolerance."""
    diff = (got.double() - want.double()).abs()
    used = diff / tolerance.clamp(min=torch.finfo(torch.float64).tiny)
    worst = int(used.argmax()) if used.numel() else 0
    assert bool((diff <= tolerance).all()), (
        f"{name}: element {worst} differs by {float(diff.flatten()[worst]):.3g}, above its float32 bound "
        f"{float(tolerance.flatten()[worst]):.3g} ({int((diff > tolerance).sum())} of {diff.numel()} elements over)"
    )
    return float(used.max()) if used.numel() else 0.0
