"""Search spaces: a regime section's hyperparameters as grid points or as a Ray Tune space.

A value list is a grid axis (`tune.grid_search` semantics: every point runs) or, for random and
optuna searches, a categorical choice; a `{low, high, log}` range is sampled (log-uniform by
default). Points are plain dicts ({"lr": 1e-3, "weight_decay": 0.0}), recorded as each trial's
`hparams`.
"""

from __future__ import annotations

import itertools

from fsv.config import Range


def grid_points(spaces: dict) -> list[dict]:
    """Every point of the grid, in a stable order (each name's values as listed)."""
    names = sorted(spaces)
    for name in names:
        if isinstance(spaces[name], Range):
            raise ValueError(f"{name} is a range; a grid needs a list of values")
    return [dict(zip(names, values)) for values in itertools.product(*(spaces[n] for n in names))]


def tune_space(spaces: dict) -> dict:
    """The same space for Ray Tune's searchers: lists as `tune.choice`, ranges as (log-)uniform."""
    from ray import tune

    out = {}
    for name, space in spaces.items():
        if isinstance(space, Range):
            out[name] = (tune.loguniform if space.log else tune.uniform)(space.low, space.high)
        elif name == "lora_rank":
            out[name] = tune.choice([int(v) for v in space])
        else:
            out[name] = tune.choice(list(space))
    return out


def edges(spaces: dict, point: dict) -> list[str]:
    """The hyperparameters whose chosen value lies on the edge of a searched list or range (a list of
    one value has no inside: it is not searched, so not reported)."""
    found = []
    for name, value in point.items():
        space = spaces.get(name)
        if isinstance(space, Range):
            if value <= space.low * 1.05 or value >= space.high / 1.05:
                found.append(name)
        elif space is not None and len(space) > 1 and value in (min(space), max(space)):
            found.append(name)
    return found
