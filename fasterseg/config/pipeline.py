"""The pipeline config: the whole FasterSeg chain (LUT, search, derive, train x3, eval, bench).

One YAML names each stage's own preset plus ``--set`` overrides, and the data once; the demo is
simply the smallest of these pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class TrainStage:
    config: str = "configs/train/synthetic_tiny.yaml"
    teacher_set: list[str] = field(default_factory=list)
    student_set: list[str] = field(default_factory=list)
    plain_student: bool = True  # also train the student without distillation


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
    device: str = "cpu"  # device for search/train/eval

    def validate(self) -> None:
        h, w = self.latency.size
        if h % 32 or w % 32:
            raise UserError(f"config: latency.size must be multiples of 32, got {h}x{w}")

    def data_overrides(self) -> list[str]:
        return [f"data.{k}={_yaml_value(v)}" for k, v in self.data.items()]


def _yaml_value(v) -> str:
    import json

    return json.dumps(v) if not isinstance(v, str) else v
