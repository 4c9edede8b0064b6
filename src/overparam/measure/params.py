"""Which parameters an instrument measures, and how they group into layers.

``params=`` of every curvature instrument selects a subset of a model's trainable parameters: a list of names
(``"head.weight"``), glob patterns over names (``"stages.2.*"``, ``"*.bn*"``), submodules (``model.head``), or a
mix. The rest stay fixed at their values. :func:`layer_blocks` groups parameters by the module that owns them
(a convolution's weight and bias are one block), which is what the per-layer tables show.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from torch import nn

ParamsLike = str | nn.Module | Iterable[str | nn.Module] | None


def select_params(model: nn.Module, params: ParamsLike = None) -> list[str]:
    """Names of the trainable parameters chosen by ``params`` (all of them for None), in the model's order.

    Raises ValueError naming the pattern that matched nothing."""
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameters")
    if params is None:
        return trainable
    items = [params] if isinstance(params, (str, nn.Module)) else list(params)
    by_module = {id(m): prefix for prefix, m in model.named_modules()}
    chosen: set[str] = set()
    for item in items:
        if isinstance(item, nn.Module):
            prefix = by_module.get(id(item))
            if prefix is None:
                raise ValueError(f"params: the module {type(item).__name__} is not part of the model")
            found = [n for n in trainable if prefix == "" or n.startswith(prefix + ".")]
            what = f"module {prefix or '(the model)'}"
        elif isinstance(item, str):
            found = [n for n in trainable if n == item or fnmatch.fnmatchcase(n, item)]
            what = f"{item!r}"
        else:
            raise TypeError(f"params: expected names, glob patterns or modules, got {type(item).__name__}")
        if not found:
            sample = ", ".join(trainable[:6]) + (", ..." if len(trainable) > 6 else "")
            raise ValueError(f"params: {what} matches no trainable parameter (they are named like: {sample})")
        chosen.update(found)
    return [n for n in trainable if n in chosen]


def layer_blocks(names: list[str]) -> dict[str, list[str]]:
    """Parameter names grouped by their owning module (the name without its last part), in order."""
    blocks: dict[str, list[str]] = {}
    for n in names:
        blocks.setdefault(n.rpartition(".")[0] or n, []).append(n)
    return blocks
