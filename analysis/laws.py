"""Pure law functions: the curves fsv fits, their inverses and derivatives. No data, no state.

Example axes are in log2 (one unit = one doubling of k or n). Every function broadcasts with numpy,
so a parameter may be a scalar or an array of bootstrap resamples.

- acc(k), k >= 1:  acc = intercept + strength * log2 k          (strength = ICL strength S)
- acc(n):          acc = chance + (upper - chance) * sigmoid(slope * (log2 n - midpoint))
                   monotone in n, from chance (n -> 0) to `upper` <= 1 (n -> infinity)
- the law:         N* = prefactor * S ** exponent               (log N* linear in log S)
"""

from __future__ import annotations

import numpy as np


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def logit(p):
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(p) - np.log1p(-p)


def icl_line(log2_k, intercept, strength):
    return intercept + strength * np.asarray(log2_k, dtype=float)


def normalised_accuracy(accuracy, chance):
    """(acc - chance) / (1 - chance): 0 at chance, 1 at perfect."""
    return (np.asarray(accuracy, dtype=float) - chance) / (1.0 - np.asarray(chance, dtype=float))


def accuracy_at_normalised(normalised, chance):
    """Inverse of `normalised_accuracy`: the raw accuracy with that chance-normalised value."""
    return chance + np.asarray(normalised, dtype=float) * (1.0 - np.asarray(chance, dtype=float))


def saturating_accuracy(log2_n, upper, midpoint, slope, chance):
    """The fine-tuning curve acc(n); `midpoint` is log2 of the n halfway from chance to `upper`."""
    return chance + (upper - chance) * sigmoid(slope * (np.asarray(log2_n, dtype=float) - midpoint))


def saturating_jacobian(log2_n, upper, midpoint, slope, chance):
    """d acc / d (upper, midpoint, slope), stacked on the last axis."""
    offset = np.asarray(log2_n, dtype=float) - midpoint
    s = sigmoid(slope * offset)
    ds = s * (1.0 - s)
    height = upper - chance
    s, d_mid, d_slope = np.broadcast_arrays(s, -height * slope * ds, height * offset * ds)
    return np.stack([s, d_mid, d_slope], axis=-1)


def saturating_log2_n_at(accuracy, upper, midpoint, slope, chance):
    """log2 n at which the fitted curve reaches `accuracy`.

    +inf where the curve never reaches it (accuracy >= upper), -inf where it starts above it
    (accuracy <= chance). The caller decides what range of n it trusts.
    """
    fraction = (np.asarray(accuracy, dtype=float) - chance) / (upper - chance)
    with np.errstate(divide="ignore", invalid="ignore"):
        log2_n = midpoint + logit(fraction) / slope
    log2_n = np.where(fraction >= 1.0, np.inf, log2_n)
    return np.where(fraction <= 0.0, -np.inf, log2_n)


def power_law(strength, prefactor, exponent):
    return prefactor * np.asarray(strength, dtype=float) ** exponent
