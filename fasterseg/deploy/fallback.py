"""Which layers an int8 model keeps in fp32 to reach an agreement floor: one search, two engines.

Both int8 paths (onnxruntime QDQ in ``fasterseg.deploy.int8``, OpenVINO NNCF in
``fasterseg.deploy.openvino``) call ``search`` with their own ``build`` (quantize again with
some layers left in fp32, return the agreement with fp32 and the model). The search is ranked by
sensitivity, not by position:

1. build with only the ``forced`` fp32 layers; done when that reaches the floor;
2. score every candidate once: the agreement with that one layer (plus the forced ones) in fp32
   (``score_one``, by default a build; an engine whose builds are slow may pass a cheaper
   estimate). Its gain is that minus the base agreement;
3. rank by gain, or by gain per unit of ``cost`` (e.g. the layer's MACs, what an fp32 layer
   costs in latency) when costs are given; layers that gain nothing are dropped;
4. add them in that order, rebuilding with every layer kept so far; a layer whose addition does
   not raise the agreement by ``min_gain`` is dropped again. Stop at the floor, at ``max_fallback`` kept layers or after
   ``2 * max_fallback`` tries.

Why: the search it replaces tried only the two convolutions at the ends of the graph at each
step; on the CamVid student it kept 8 convolutions in fp32 (int8 then barely faster than fp32)
because the layers worth keeping after the first were not at the ends (docs/int8.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, Sequence, TypeVar

logger = logging.getLogger(__name__)

__all__ = ["FallbackResult", "search"]

T = TypeVar("T")
# Agreement a layer must add to be worth fp32 (0.02 points): on the CamVid student every layer but
# the first gained 0.07 points or less alone on the 4 tuning images, and the 5-7 such layers the
# search kept without this bound bought nothing on the held-out images (docs/int8.md).
MIN_GAIN = 0.0002


@dataclass
class FallbackResult(Generic[T]):
    """What ``search`` found: the model to use and how (JSON-ready except ``model``)."""

    model: T
    agreement: float
    fp32: list[str]  # forced + kept, in the order they were added
    kept: list[str]  # the layers the search added
    reached: bool
    steps: list[dict[str, Any]] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)  # candidate -> agreement alone
    order: list[str] = field(default_factory=list)  # candidates by rank (positive gain only)
    builds: int = 0


def rank(sensitivity: Mapping[str, float], base: float,
         cost: Mapping[str, float] | None = None) -> list[str]:
    """Candidates that gain over ``base``, best first: by gain, or gain per ``cost`` when given
    (a candidate without a positive cost counts at the mean cost of the others)."""
    known = [float(c) for c in (cost or {}).values() if c and c > 0]
    mean = sum(known) / len(known) if known else 1.0

    def key(name: str) -> float:
        c = float((cost or {}).get(name) or 0.0)
        return (sensitivity[name] - base) / (c if c > 0 else mean)

    gaining = [n for n in sensitivity if sensitivity[n] > base]
    return sorted(gaining, key=lambda n: (-key(n), list(sensitivity).index(n)))


def search(
    build: Callable[[list[str]], tuple[float, T]],
    candidates: Sequence[str],
    *,
    floor: float | None,
    forced: Sequence[str] = (),
    max_fallback: int = 8,
    score_one: Callable[[str], float] | None = None,
    cost: Mapping[str, float] | None = None,
    min_gain: float = MIN_GAIN,
    what: str = "int8",
) -> FallbackResult[T]:
    """Keep the fewest ``candidates`` in fp32 that bring the agreement to ``floor`` (module
    docstring). ``build(fp32_layers)`` returns (agreement with fp32, model); ``floor`` None
    builds once with ``forced`` and searches nothing. A layer is kept only if it adds at least
    ``min_gain`` (a layer's gain grows once others are fp32: the CamVid classifier gains 0.01
    points alone, 0.04 after the first convolution). ``what`` prefixes the log lines.

    The result's model is the best one built: the first that reached the floor, else the one
    with the highest agreement.
    """
    forced = list(dict.fromkeys(forced))
    base, model = build(list(forced))
    builds = 1
    steps: list[dict[str, Any]] = [{"fp32": list(forced), "agreement": base}]
    result = FallbackResult(model=model, agreement=base, fp32=list(forced), kept=[],
                            reached=floor is not None and base >= floor, steps=steps)
    if floor is None or result.reached or max_fallback < 1:
        result.builds = builds
        return result

    pool = [c for c in dict.fromkeys(candidates) if c not in forced]
    sensitivity: dict[str, float] = {}
    for cand in pool:
        if score_one is not None:
            sensitivity[cand] = float(score_one(cand))
        else:
            sensitivity[cand] = float(build([*forced, cand])[0])
            builds += 1
        logger.debug("%s: %s alone in fp32 -> agreement %.5f", what, cand, sensitivity[cand])
    order = rank(sensitivity, base, cost)
    result.sensitivity, result.order = sensitivity, order

    kept: list[str] = []
    best_agree, best_model = base, model
    for tries, cand in enumerate(order):
        if len(kept) >= max_fallback or tries >= 2 * max_fallback or best_agree >= floor:
            break
        agree, pred = build([*forced, *kept, cand])
        builds += 1
        keep = agree >= best_agree + min_gain and agree > best_agree
        steps.append({"fp32": [cand], "agreement": agree, "alone": sensitivity[cand],
                      "kept": keep})
        logger.info("%s: %s in fp32 -> agreement %.4f (%s)", what, cand, agree,
                    "kept" if keep else "dropped: no gain")
        if keep:
            kept.append(cand)
            best_agree, best_model = agree, pred
    result.model, result.agreement = best_model, best_agree
    result.kept, result.fp32 = kept, [*forced, *kept]
    result.reached = best_agree >= floor
    result.builds = builds
    return result
