"""The pipeline config: the whole FasterSeg chain (LUT, search, derive, train x3, eval, bench).

One YAML names each stage's own preset plus ``--set`` overrides, and the data once; the demo is
simply the smallest of these pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fasterseg.config.search_space import DETAIL_RATES, LIMITS
from fasterseg.errors import UserError


@dataclass
class LatencyStage:
    space: str = "configs/search/synthetic_tiny.yaml"  # search-space config the table covers
    size: tuple[int, int] = (128, 256)  # deployment input size: LUT, checks and benchmarks
    device: str = "cpu"
    backend: str = "torch"
    dtype: str = "fp32"
    threads: int = 1
    check_samples: int = 12
    extra: list[str] = field(default_factory=list)  # extra CLI arguments for `latency build`


@dataclass
class SearchStage:
    config: str = "configs/search/synthetic_tiny.yaml"
    set: list[str] = field(default_factory=list)
    target_ms: float | None = None  # branch-selection latency target (None: 8.3 ms scaled)
    detail_channels: int = 0  # student's 1/4-resolution detail head (derive --detail-channels)
    detail_rate: int = 4  # that head's resolution, 1/4 or 1/2 (derive --detail-rate)


@dataclass
class TrainStage:
    config: str = "configs/train/synthetic_tiny.yaml"
    teacher_set: list[str] = field(default_factory=list)
    student_set: list[str] = field(default_factory=list)
    plain_student: bool = True  # also train the student without distillation
    # A published architecture (e.g. fasterseg_student) trained like the plain student, with
    # the identical budget, as the baseline the searched student is judged against.
    baseline: str | None = None
    # Extra training seeds for the distillation study: the distilled and the plain student are
    # trained again with each seed (the first pair uses the train config's own seed).
    seeds: list[int] = field(default_factory=list)
    # Per-class logit offsets fitted on the training images after each training
    # (`fasterseg fit-offsets`, folded into the classifier bias: no inference cost); evaluation
    # and benchmarks then use <run>/best.offsets.pt. False is the paper's network.
    fit_offsets: bool = False


@dataclass
class CrossSequenceStage:
    """Generalisation to unseen streets: whole sequences of the training split held out.

    The plain student (and the baseline, if any) is trained again without the held-out
    sequences and evaluated on them (split ``holdout``) and on val.
    """

    holdout: list[str] = field(default_factory=list)  # file-name prefixes, e.g. [0006R0]
    baseline: bool = True  # also for the baseline architecture


@dataclass
class EvalStage:
    split: str = "val"
    extra: list[str] = field(default_factory=list)


@dataclass
class BenchStage:
    device: str = "cpu"
    backend: str = "torch"
    dtype: str = "fp32"
    seconds: float = 2.0
    threads: int = 1


@dataclass
class PipelineConfig:
    name: str = "demo"
    out: str = "runs/demo"
    data: dict = field(default_factory=dict)  # data.* overrides given to every stage
    latency: LatencyStage = field(default_factory=LatencyStage)
    search: SearchStage = field(default_factory=SearchStage)
    train: TrainStage = field(default_factory=TrainStage)
    eval: EvalStage = field(default_factory=EvalStage)
    bench: BenchStage = field(default_factory=BenchStage)
    cross_sequence: CrossSequenceStage = field(default_factory=CrossSequenceStage)
    device: str = "cpu"  # device for search/train/eval
    # Expected wall time of the whole preset, stated by the preset for the machines it was
    # measured on (free text, shown by --estimate-only and in the report).
    expected_wall_time: dict = field(default_factory=dict)

    def validate(self) -> None:
        h, w = self.latency.size
        if h % 32 or w % 32:
            raise UserError(f"config: latency.size must be multiples of 32, got {h}x{w}")
        if len(set(self.train.seeds)) != len(self.train.seeds):
            raise UserError(f"config: train.seeds has duplicates: {self.train.seeds}")
        if any(not isinstance(p, str) or not p for p in self.cross_sequence.holdout):
            raise UserError("config: cross_sequence.holdout must be file-name prefixes")
        lo, hi = LIMITS["detail_channels"]
        d = self.search.detail_channels
        if isinstance(d, bool) or not isinstance(d, int) or not lo <= d <= hi:
            raise UserError(f"config: search.detail_channels must be an integer in {lo}..{hi}, got {d!r}")
        rate = self.search.detail_rate
        if isinstance(rate, bool) or rate not in DETAIL_RATES:
            raise UserError(f"config: search.detail_rate must be 2 or 4, got {rate!r}")

    def data_overrides(self) -> list[str]:
        return [f"data.{k}={_yaml_value(v)}" for k, v in self.data.items()]


def _yaml_value(v) -> str:
    import json

    return json.dumps(v) if not isinstance(v, str) else v
