"""Every command in the docs runs, so the docs cannot rot (issue 7.5).

Every ```bash block of every ``docs/*.md`` and of ``README.md`` is parsed; each line starting
with ``fasterseg `` (a trailing ``# comment`` stripped, ``\\`` continuations joined) is one test
item, run in-process through ``fasterseg.cli.main.main(argv)`` in a temporary working directory
per document, in document order (later commands use the outputs of earlier ones), and must exit 0
(with ``--json``: the last stdout line must parse as a JSON object). Every ```python block is
executed too (one namespace per document, same working directory). ```text blocks are never run:
use them for output samples and illustrations, never for commands.

Other lines in bash blocks: README-style setup lines (``SETUP_PREFIXES``, run by CI itself) are
exempt; ``torchrun ... -m fasterseg.cli.main ARGS`` runs ``ARGS`` through ``main()`` with world
size 1; anything else fails the test (move it to a ```text block or handle it here).

What differs from the docs is listed in ``SMOKE_TRANSFORMS`` (so expensive or hardware-specific
commands finish in seconds on a 2-core CPU) and ``PROVIDED`` (files a document assumes exist).
A command whose config preset is listed in ``PENDING`` and not yet in the checkout is skipped
with a message naming the owner; it runs as soon as the file lands.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DOC_FILES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]

# --------------------------------------------------------------------------- what differs
# Dataset roots used in the docs -> tiny trees in each preset's exact layout (fixture below).
DATA_ROOTS = {
    "/data/camvid": "camvid",
    "/data/cityscapes": "cityscapes",
    "/data/bdd100k": "bdd100k",
    "/data/mydata": "mydata",
}
TINY_SIZE = "64x128"  # latency tables / benchmarks / exports (divisible by 32, >= 64 for 1/32)
MAX_PIXELS = 256 * 512  # bench/export sizes above this are replaced by 128x256
# Train presets that are already CPU-sized (the quick start's contract: < 1 min on 2 cores); a
# shorter schedule would leave BatchNorm statistics at their initial values and logits at 1e10.
TINY_PRESETS = ("synthetic_tiny",)
# Tiny training schedule appended to every other `train -c ...` (a resume keeps the run's config).
TRAIN_SMOKE = [
    "train.epochs=1", "train.iters_per_epoch=2", "train.batch_size=2", "train.eval_max_images=1",
    "train.cost_warmup=0", "train.cost_measure=1", "train.log_every=1",
    "data.crop_size=[64,128]", "data.scales=[1.0]", "data.scale_range=null", "data.workers=0",
    "data.downsample=1", "data.synthetic_size=[64,128]", "data.synthetic_train=4",
    "data.synthetic_val=1",
]
# Tiny space and schedule appended to every `search -c ...`: the synthetic_tiny space (6 layers,
# ratios 4/8), one pretrain + one search epoch of one iteration at 64x128.
SEARCH_SMOKE = [
    "space.num_layers=6", "space.ratios=[4,8]", "space.teacher_stem_ratio=8",
    "space.teacher_head_ratio=8", "space.student_stem_ratio=8", "space.student_head_ratio=8",
    "search.pretrain_epochs=1", "search.search_epochs=1", "search.iters_per_epoch=1",
    "search.min_iters_per_epoch=1", "search.pretrain_crop_size=[64,128]",
    "search.crop_size=[64,128]", "search.pretrain_batch_size=2", "search.batch_size=2",
    "search.val_max_images=1", "search.cost_warmup=0", "search.cost_measure=1",
    "data.synthetic_size=[64,128]", "data.synthetic_train=4", "data.synthetic_val=1",
    "data.downsample=1", "data.scales=[1.0]", "data.workers=0",
]
# THE SMOKE TRANSFORMS: everything a docs command is changed by, applied in this order to every
# `fasterseg ...` argv (functions below): (function, what changes, why).
SMOKE_TRANSFORMS = [
    ("t_data_roots", "/data/{camvid,cityscapes,bdd100k,mydata} -> tiny trees",
     "no downloads in CI; the presets' exact layouts, a few 64x128 images each"),
    ("t_cpu", "--device cuda[:N] -> cpu", "CI has no GPU; the code path is the same"),
    ("t_tensorrt", "--backend tensorrt -> skipped",
     "unless tensorrt is importable and CUDA present"),
    ("t_openvino", "--backend/--format openvino -> skipped",
     "unless openvino is importable (and nncf, for --dtype int8): an optional extra"),
    ("t_compile", "--backend compile -> torch",
     "inductor compiles for ~1 min on 2 cores (FASTERSEG_DOCS_COMPILE=1 keeps it)"),
    ("t_estimate_only", "demo / pipeline / ablate -> + --estimate-only",
     "the demo itself is tested elsewhere; real-scale runs take days"),
    ("t_pipeline_crop", "pipeline / ablate (not demo) -> + --set data.crop_size=[64,128]",
     "the estimate times one training step at the configured crop"),
    ("t_train", "train -c PRESET -> + TRAIN_SMOKE --set overrides",
     "1 epoch x 2 iterations at 64x128 (not for TINY_PRESETS, already seconds)"),
    ("t_search", "search -c PRESET -> + SEARCH_SMOKE --set overrides",
     "the tiny space, 1 + 1 epochs x 1 iteration at 64x128"),
    ("t_latency", "latency build -> 64x128, 1 warm-up, 1 rep; latency check -> 2 samples",
     "the paper space at 1024x2048 takes an hour"),
    ("t_sizes", "bench -> --seconds 0.5; bench/export above 256x512 -> --size 128x256",
     "timings are the benchmarks' job, not CI's"),
]
# Config presets a doc may name before their owner commits them: {path: owner}. Such a command is
# skipped (with the owner in the message) while the file is missing; any other missing preset
# fails the test. Empty now: every preset the docs name exists.
PENDING: dict[str, str] = {}
# Lines of bash blocks that set up the environment; CI runs the README's setup itself.
SETUP_PREFIXES = (
    "python3.11 -m venv", "pip ", ".venv/bin/", "source .venv/bin/activate", "git clone",
    "cd fasterseg",
)
# Paths a document may use without creating them (provided only if the document refers to them
# before any of its own commands writes them).
PROVIDED = {
    "configs": "symlink to the checkout's configs/ (the docs are run from the repository root)",
    "arch_0.pt": "the authors' teacher arch file (shared/reference, else a stand-in of its format)",
    "arch_1.pt": "the authors' student arch file (shared/reference, else a stand-in)",
    "lut.json": "a latency table of configs/search/synthetic_tiny.yaml at 64x128",
    "runs/search/tiny": "a search run dir of the synthetic_tiny space (random arch_params.json)",
    "runs/quick": "the getting-started run: `fasterseg train -c configs/train/synthetic_tiny.yaml "
    "--out runs/quick` (~20 s, built once)",
}


class SkipStep(Exception):
    """A documented command that cannot run here (reason in the message)."""


def _opt(argv: list[str], flag: str) -> int | None:
    return argv.index(flag) if flag in argv else None


def _set_opt(argv: list[str], flag: str, value: str) -> list[str]:
    """Replace the value of ``flag`` or append ``flag value``."""
    i = _opt(argv, flag)
    if i is None:
        return [*argv, flag, value]
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def _cmd(argv: list[str]) -> str:
    """``train``, ``latency build``, ``data check``, ... (subcommand plus action when any)."""
    if argv[:1] and argv[0] in ("latency", "data") and len(argv) > 1:
        return f"{argv[0]} {argv[1]}"
    return argv[0] if argv else ""


def _sets(items: list[str]) -> list[str]:
    return [a for s in items for a in ("--set", s)]


def t_data_roots(argv: list[str], ws: Path) -> list[str]:
    out = []
    for tok in argv:
        for root, name in DATA_ROOTS.items():
            tok = re.sub(re.escape(root) + r"(?=$|[/:])", str(ws / "data" / name), tok)
        out.append(tok)
    return out


def t_cpu(argv: list[str], ws: Path) -> list[str]:
    i = _opt(argv, "--device")
    if i is not None and argv[i + 1].startswith("cuda"):
        if "--backend" in argv and argv[argv.index("--backend") + 1] == "tensorrt":
            return argv  # t_tensorrt decides
        return _set_opt(argv, "--device", "cpu")
    return argv


def t_tensorrt(argv: list[str], ws: Path) -> list[str]:
    i = _opt(argv, "--backend")
    if i is not None and argv[i + 1] == "tensorrt":
        import importlib.util

        if importlib.util.find_spec("tensorrt") is None:
            raise SkipStep("--backend tensorrt: the tensorrt package is not installed here")
        import torch

        if not torch.cuda.is_available():
            raise SkipStep("--backend tensorrt needs a CUDA device")
    return argv


def t_openvino(argv: list[str], ws: Path) -> list[str]:
    import importlib.util

    i = _opt(argv, "--backend") or _opt(argv, "--format")
    if i is not None and argv[i + 1] == "openvino":
        if importlib.util.find_spec("openvino") is None:
            raise SkipStep("openvino: the optional extra is not installed here")
        j = _opt(argv, "--dtype")
        if j is not None and argv[j + 1] == "int8" and importlib.util.find_spec("nncf") is None:
            raise SkipStep("openvino --dtype int8: nncf is not installed here")
    return argv


def t_compile(argv: list[str], ws: Path) -> list[str]:
    i = _opt(argv, "--backend")
    if i is not None and argv[i + 1] == "compile" and not os.environ.get("FASTERSEG_DOCS_COMPILE"):
        return _set_opt(argv, "--backend", "torch")
    return argv


def t_estimate_only(argv: list[str], ws: Path) -> list[str]:
    if _cmd(argv) in ("demo", "pipeline", "ablate") and "--estimate-only" not in argv:
        return [*argv, "--estimate-only"]
    return argv


def t_pipeline_crop(argv: list[str], ws: Path) -> list[str]:
    c = _config_arg(argv)
    if _cmd(argv) in ("pipeline", "ablate") and c and "demo" not in Path(c).stem:
        return [*argv, *_sets(["data.crop_size=[64,128]"])]
    return argv


def _config_arg(argv: list[str]) -> str:
    for flag in ("-c", "--config"):
        i = _opt(argv, flag)
        if i is not None and i + 1 < len(argv):
            return argv[i + 1]
    return ""


def t_train(argv: list[str], ws: Path) -> list[str]:
    c = _config_arg(argv)
    if _cmd(argv) == "train" and c and Path(c).stem not in TINY_PRESETS:
        return [*argv, *_sets(TRAIN_SMOKE)]
    return argv


def t_search(argv: list[str], ws: Path) -> list[str]:
    if _cmd(argv) == "search" and _config_arg(argv):
        return [*argv, *_sets(SEARCH_SMOKE)]
    return argv


def t_latency(argv: list[str], ws: Path) -> list[str]:
    if _cmd(argv) == "latency build":
        for flag, value in (("--size", TINY_SIZE), ("--warmup", "1"), ("--reps", "1"),
                            ("--rounds", "1"), ("--threads", "1")):
            argv = _set_opt(argv, flag, value)
    elif _cmd(argv) == "latency check":
        for flag, value in (("--samples", "2"), ("--warmup", "1"), ("--reps", "1"),
                            ("--rounds", "1")):
            argv = _set_opt(argv, flag, value)
    return argv


def _big(size: str) -> bool:
    h, _, w = size.lower().partition("x")
    return int(h) * int(w) > MAX_PIXELS


def t_sizes(argv: list[str], ws: Path) -> list[str]:
    if _cmd(argv) == "bench":
        argv = _set_opt(argv, "--seconds", "0.5")
    if _cmd(argv) in ("bench", "export"):
        i = _opt(argv, "--size")
        if i is None or _big(argv[i + 1]):
            argv = _set_opt(argv, "--size", "128x256")
    return argv


def apply_transforms(argv: list[str], ws: Path) -> list[str]:
    for name, _, _ in SMOKE_TRANSFORMS:
        argv = globals()[name](argv, ws)
    return argv


# --------------------------------------------------------------------------------- parsing
FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)")
OUTPUT_FLAGS = ("--out", "-o", "--output", "--to-params", "--plot", "--save-pred")
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&", "2>&1"}


@dataclass
class Block:
    doc: Path
    lang: str
    line: int  # 1-based line of the first content line
    lines: list[str] = field(default_factory=list)


@dataclass
class Step:
    doc: Path
    line: int
    kind: str  # "cli" | "python" | "bad"
    text: str
    argv: list[str] = field(default_factory=list)
    torchrun: bool = False

    @property
    def id(self) -> str:
        return f"{self.doc.name}:{self.line}"


def read_blocks(doc: Path) -> list[Block]:
    blocks, cur, indent, fence = [], None, 0, ""
    for n, raw in enumerate(doc.read_text().splitlines(), 1):
        m = FENCE.match(raw)
        if cur is None:
            if m:
                indent, fence = len(m.group(1)), m.group(2)
                cur = Block(doc, m.group(3).lower(), n + 1)
        elif m and m.group(2).startswith(fence) and not raw.strip()[len(m.group(2)):].strip():
            blocks.append(cur)
            cur = None
        else:
            cur.lines.append(raw[indent:] if raw[:indent].strip() == "" else raw)
    return blocks


def _logical_lines(block: Block) -> list[tuple[int, str]]:
    """(line number, text) with ``\\`` continuations joined."""
    out, buf, start = [], "", None
    for k, line in enumerate(block.lines):
        if start is None:
            start = block.line + k
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append((start, buf + line))
        buf, start = "", None
    if buf:
        out.append((start, buf))
    return out


def bash_steps(block: Block) -> list[Step]:
    steps = []
    for line, text in _logical_lines(block):
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith(SETUP_PREFIXES):
            continue
        try:
            tokens = shlex.split(stripped, comments=True)
        except ValueError as e:
            steps.append(Step(block.doc, line, "bad", f"{stripped}  (cannot parse: {e})"))
            continue
        if not tokens:
            continue
        if SHELL_OPERATORS & set(tokens):
            steps.append(Step(block.doc, line, "bad", f"{stripped}  (one command per line, no "
                              "pipes or redirections: the test runs it in-process)"))
        elif tokens[0] == "fasterseg":
            steps.append(Step(block.doc, line, "cli", stripped, tokens[1:]))
        elif tokens[0] == "torchrun" and "-m" in tokens:
            i = tokens.index("-m")
            if tokens[i + 1 : i + 2] != ["fasterseg.cli.main"]:
                steps.append(Step(block.doc, line, "bad", f"{stripped}  (torchrun must run "
                                  "-m fasterseg.cli.main)"))
            else:
                steps.append(Step(block.doc, line, "cli", stripped, tokens[i + 2 :], torchrun=True))
        else:
            steps.append(Step(block.doc, line, "bad", f"{stripped}  (not a fasterseg command: "
                              "use a ```text block, or teach tests/docs/test_docs_commands.py)"))
    return steps


def doc_steps(doc: Path) -> list[Step]:
    steps = []
    for b in read_blocks(doc):
        if b.lang == "bash":
            steps += bash_steps(b)
        elif b.lang == "python":
            steps.append(Step(doc, b.line, "python", "\n".join(b.lines)))
    return steps


ALL_STEPS = [s for d in DOC_FILES for s in doc_steps(d)]


# ------------------------------------------------------------------------------- workspace
def _png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)


def _jpg(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path, quality=90)


def _img(rng: np.random.Generator, h: int = 64, w: int = 128) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _lab(rng: np.random.Generator, values, h: int = 64, w: int = 128) -> np.ndarray:
    return rng.choice(np.asarray(values, np.uint8), (h, w))


def write_data_trees(root: Path) -> None:
    """The four dataset roots in the layouts the presets read (docs/custom_dataset.md)."""
    from fasterseg.data.synthetic import write_folder_tree

    rng = np.random.default_rng(0)
    counts = {"train": 4, "val": 1, "test": 1}
    cs = root / "cityscapes"
    for split in ("train", "val"):
        for k in range(counts[split]):
            stem = f"city{k % 2}/city{k % 2}_{k:06d}_000019"
            _png(cs / "leftImg8bit" / split / f"{stem}_leftImg8bit.png", _img(rng))
            lab = _lab(rng, [*range(19), 255])
            _png(cs / "gtFine" / split / f"{stem}_gtFine_labelTrainIds.png", lab)
    cv = root / "camvid"
    for split, n in counts.items():
        lines = []
        for k in range(n):
            seq = "0006R0" if split == "train" and k == n - 1 else "0001TP"  # a held-out sequence
            name = f"{seq}_{k:06d}.png"
            _png(cv / split / name, _img(rng))
            _png(cv / f"{split}annot" / name, _lab(rng, range(12)))
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (cv / f"{split}.txt").write_text("\n".join(lines) + "\n")
    bdd = root / "bdd100k"
    for split in ("train", "val"):
        for k in range(counts[split]):
            name = f"{split[0]}{k:04d}-0000"
            _jpg(bdd / "images" / "10k" / split / f"{name}.jpg", _img(rng))
            _png(bdd / "labels" / "sem_seg" / "masks" / split / f"{name}.png",
                 _lab(rng, [*range(19), 255]))
    write_folder_tree(root / "mydata", num_train=4, num_val=1, size=(64, 128), seed=0,
                      progress=False)


def _official_dir() -> Path | None:
    shared = Path(os.environ.get("FASTERSEG_SHARED") or REPO.parent / "shared")
    cand = shared / "reference" / "official_arch"
    if (cand / "arch_0.pt").is_file() and (cand / "arch_1.pt").is_file():
        return cand
    return None


def write_official_standin(path: Path, k: int, seed: int) -> None:
    """Raw logits in the authors' arch-file layout (facts section 13) for CI without shared/."""
    import torch

    g = torch.Generator().manual_seed(seed)
    width = 1 if k == 0 else 5
    raw: dict = {}
    for j, rows in enumerate((16, 15, 14)):
        raw[f"alpha_{k}_{j}"] = torch.randn(rows, 5, generator=g)
    for j, rows in ((1, 14), (2, 13)):
        raw[f"beta_{k}_{j}"] = torch.randn(rows, 2, generator=g)
    for j, rows in enumerate((15, 15, 14)):
        raw[f"ratio_{k}_{j}"] = torch.randn(rows, width, generator=g)
    raw.update(mIoU02=0.02755, mIoU12=0.06234, latency02=6.2605, latency12=6.4140)
    torch.save(raw, path)


def write_tiny_search_run(run: Path) -> None:
    from fasterseg.arch.archparams import gamma_rows, make_archparams, write_archparams
    from fasterseg.config.search_space import SearchSpaceConfig

    L = 6
    space = SearchSpaceConfig(num_layers=L, ratios=[4, 8], teacher_stem_ratio=8,
                              teacher_head_ratio=8, student_stem_ratio=8, student_head_ratio=8)
    rng = np.random.default_rng(0)

    def role(gamma: bool) -> dict:
        return {
            "alpha": [rng.normal(size=(L - j, 5)) for j in range(3)],
            "beta": [None] + [rng.normal(size=(L - j - 1, 2)) for j in (1, 2)],
            "gamma": [rng.normal(size=(gamma_rows(L, j), 2)) for j in range(3)] if gamma else None,
        }

    combos = ("8", "16", "32", "8,16", "8,32", "16,32")
    scores = {r: {c: {"miou": 0.2 + 0.01 * i} for i, c in enumerate(combos)}
              for r in ("teacher", "student")}
    params = make_archparams(space, role(False), role(True), epoch=1, branch_scores=scores,
                             latency_target_ms=8.3)
    write_archparams(run / "arch_params.json", params)


class Provider:
    """Builds each ``PROVIDED`` entry once, on first use, in a shared base directory."""

    def __init__(self, base: Path):
        self.base = base
        (base / "configs").symlink_to(REPO / "configs", target_is_directory=True)
        write_data_trees(base / "data")

    def path(self, name: str) -> Path:
        p = self.base / name
        if not p.exists():
            getattr(self, "_build_" + re.sub(r"\W", "_", name))(p)
        return p

    def _cli(self, argv: list[str]) -> None:
        from fasterseg.cli.main import main

        with _chdir(self.base), _quiet():
            rc = main(argv)
        assert rc == 0, f"could not build a provided file: fasterseg {shlex.join(argv)}"

    def _build_arch_0_pt(self, p: Path, k: int = 0) -> None:
        official = _official_dir()
        if official:
            shutil.copy(official / p.name, p)
        else:
            write_official_standin(p, k, seed=k)

    def _build_arch_1_pt(self, p: Path) -> None:
        self._build_arch_0_pt(p, k=1)

    def _build_lut_json(self, p: Path) -> None:
        self._cli(["latency", "build", "--space", "configs/search/synthetic_tiny.yaml",
                   "--size", TINY_SIZE, "--warmup", "1", "--reps", "1", "--rounds", "1",
                   "--threads", "1", "-o", p.name])

    def _build_runs_search_tiny(self, p: Path) -> None:
        write_tiny_search_run(p)

    def _build_runs_quick(self, p: Path) -> None:
        self._cli(["train", "-c", "configs/train/synthetic_tiny.yaml", "--out", "runs/quick"])


@pytest.fixture(scope="session")
def docs_base(tmp_path_factory) -> Provider:
    """The data trees now; everything else in ``PROVIDED`` when a document first needs it."""
    return Provider(tmp_path_factory.mktemp("docs_base"))


@contextlib.contextmanager
def _chdir(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _outputs(step: Step) -> list[str]:
    argv, outs = step.argv, []
    for i, tok in enumerate(argv[:-1]):
        if tok in OUTPUT_FLAGS:
            outs.append(argv[i + 1])
    if _cmd(argv) == "data synth" and len(argv) > 2:
        outs.append(argv[2])
    return [o.rstrip("/") for o in outs]


def _refers(tokens: list[str], path: str) -> bool:
    return any(t == path or t.startswith(path + "/") or t.startswith(path + ":") for t in tokens)


def _tokens(step: Step) -> list[str]:
    if step.kind == "cli":
        return step.argv
    return re.findall(r"[\w./-]+", step.text)


def provided_for(steps: list[Step]) -> set[str]:
    """PROVIDED entries the document refers to before one of its commands writes them."""
    need, written = set(), set()
    for s in steps:
        outs = _outputs(s) if s.kind == "cli" else []
        toks = [t for t in _tokens(s) if t.rstrip("/") not in outs]
        for p in PROVIDED:
            if p not in written and _refers(toks, p):
                need.add(p)
        for o in outs:
            written.update(p for p in PROVIDED if o == p or o.startswith(p + "/"))
    return need | {"configs"}


def referenced_configs(argv: list[str]) -> list[str]:
    """Config presets a command names: ``configs/...yaml`` paths and ``-c NAME`` preset names."""
    refs = [t for t in argv if t.startswith("configs/") and t.endswith((".yaml", ".yml"))]
    for flag in ("-c", "--config"):
        i = _opt(argv, flag)
        if i is not None and i + 1 < len(argv):
            name = argv[i + 1]
            if "/" not in name and not name.endswith((".yaml", ".yml")) and _cmd(argv) in (
                "train", "search"
            ):
                refs.append(f"configs/{_cmd(argv)}/{name}.yaml")
    return refs


class DocRun:
    """Runs one document's steps in order, once, in its own workspace."""

    def __init__(self, doc: Path, provider: Provider, root: Path):
        self.doc = doc
        self.steps = [s for s in ALL_STEPS if s.doc == doc]
        self.ws = root / doc.stem
        self.ws.mkdir(parents=True)
        shutil.copytree(provider.base / "data", self.ws / "data")
        for p in provided_for(self.steps):
            if p == "configs":
                (self.ws / "configs").symlink_to(REPO / "configs", target_is_directory=True)
                continue
            src, dst = provider.path(p), self.ws / p
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copy(src, dst)
        self.done: dict[int, tuple[str, str]] = {}  # index -> (status, message)
        self.skipped_outputs: dict[str, str] = {}  # output path -> step id that was skipped
        self.namespace: dict = {"__name__": "__docs__"}

    def run_until(self, index: int) -> tuple[str, str]:
        for k in range(index + 1):
            if k not in self.done:
                self.done[k] = self._run(self.steps[k])
        return self.done[index]

    def _run(self, step: Step) -> tuple[str, str]:
        import torch

        threads = torch.get_num_threads()
        if step.kind == "bad":
            return "fail", f"{step.id}: {step.text}"
        for out, sid in self.skipped_outputs.items():
            if _refers(_tokens(step), out):
                return "skip", f"depends on {out!r}, written by skipped step {sid}"
        try:
            if step.kind == "python":
                return self._run_python(step)
            return self._run_cli(step)
        except SkipStep as e:
            if step.kind == "cli":
                for o in _outputs(step):
                    self.skipped_outputs[o] = step.id
            return "skip", f"{step.id}: {e}"
        finally:
            torch.set_num_threads(threads)  # `--threads N` must not leak into other tests

    def _run_python(self, step: Step) -> tuple[str, str]:
        import traceback

        out = io.StringIO()
        try:
            code = compile(step.text, f"{self.doc.name}:{step.line}", "exec")
            with _chdir(self.ws), contextlib.redirect_stdout(out):
                exec(code, self.namespace)
        except Exception:
            tb = traceback.format_exc(limit=-3)
            return "fail", (f"{step.id}: the ```python block raised (runnable blocks must run; "
                            f"use ```text for illustrations):\n{step.text}\n{tb}")
        return "ok", out.getvalue()

    def _run_cli(self, step: Step) -> tuple[str, str]:
        from fasterseg.cli.main import main

        if step.torchrun:
            import importlib

            mod = importlib.import_module("fasterseg.cli.main")
            assert callable(getattr(mod, "entry", None)), "python -m fasterseg.cli.main is broken"
        for cfg in referenced_configs(step.argv):
            if not (REPO / cfg).is_file():
                if cfg in PENDING:
                    raise SkipStep(f"{cfg} is not in the checkout yet ({PENDING[cfg]})")
                return "fail", f"{step.id}: {step.text}\n  names {cfg}, which does not exist"
        argv = apply_transforms(list(step.argv), self.ws)
        out, err = io.StringIO(), io.StringIO()
        with _chdir(self.ws), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
        stdout, stderr = out.getvalue(), err.getvalue()
        ran = "fasterseg " + shlex.join(argv)
        if rc != 0:
            return "fail", (f"{step.id}: `{step.text}` exited {rc}\n  ran: {ran}\n"
                            f"  stdout (tail):\n{stdout[-3000:]}\n"
                            f"  stderr (tail):\n{stderr[-3000:]}")
        if "--json" in argv:
            lines = stdout.strip().splitlines()
            try:
                obj = json.loads(lines[-1])
            except (IndexError, json.JSONDecodeError):
                return "fail", (f"{step.id}: --json but the last stdout line is not JSON:\n"
                                f"{stdout[-2000:]}")
            if not isinstance(obj, dict):
                return "fail", f"{step.id}: --json printed {type(obj).__name__}, not an object"
        return "ok", stdout


_RUNS: dict[Path, DocRun] = {}


@pytest.fixture(scope="session")
def docs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docs_ws")


def _id(step: Step) -> str:
    return step.id


# --------------------------------------------------------------------------------- tests
@pytest.mark.slow
@pytest.mark.parametrize("step", ALL_STEPS, ids=_id)
def test_doc_step(step: Step, docs_base: Provider, docs_root: Path) -> None:
    run = _RUNS.get(step.doc)
    if run is None:
        run = _RUNS[step.doc] = DocRun(step.doc, docs_base, docs_root)
    status, msg = run.run_until(run.steps.index(step))
    if status == "skip":
        pytest.skip(msg)
    assert status == "ok", msg


def test_docs_have_commands() -> None:
    """The parser finds the commands (guards against a silently broken fence parser)."""
    by_doc = {d.name: [s for s in ALL_STEPS if s.doc == d and s.kind == "cli"] for d in DOC_FILES}
    for name in ("getting_started.md", "reproduce_paper.md", "deployment.md"):
        if (REPO / "docs" / name).is_file():
            assert by_doc.get(name), f"no fasterseg commands found in {name}"
    assert any(s.doc.name == "README.md" and s.kind == "python" for s in ALL_STEPS)
    first = by_doc["getting_started.md"][0] if by_doc.get("getting_started.md") else None
    assert first is None or first.argv[:1] == ["info"]


def test_commands_are_not_hidden_in_other_blocks() -> None:
    """A command in an unlabelled/sh/console block would escape this test: label it bash or text."""
    bad = []
    for d in DOC_FILES:
        for b in read_blocks(d):
            if b.lang in ("bash", "python", "text"):
                continue
            for k, line in enumerate(b.lines):
                if re.match(r"\s*(\$\s*)?(fasterseg|torchrun) ", line):
                    bad.append(f"{d.name}:{b.line + k} (```{b.lang or '(none)'}): {line.strip()}")
    assert not bad, "commands outside ```bash blocks:\n" + "\n".join(bad)


def test_parser_handles_comments_continuations_and_torchrun(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "text\n```bash\nfasterseg info a --size 8x8   # comment\nfasterseg latency build \\\n"
        "    --space s.yaml -o 'my lut.json'\n.venv/bin/pip install -e .\n"
        "torchrun --nproc-per-node 4 -m fasterseg.cli.main train -c x\nls -l\n```\n"
        "```text\nfasterseg not-run\n```\n  ```python\n  x = 1\n  ```\n"
    )
    steps = doc_steps(doc)
    assert [s.kind for s in steps] == ["cli", "cli", "cli", "bad", "python"]
    assert steps[0].argv == ["info", "a", "--size", "8x8"] and steps[0].line == 3
    assert steps[1].argv == ["latency", "build", "--space", "s.yaml", "-o", "my lut.json"]
    assert steps[2].torchrun and steps[2].argv == ["train", "-c", "x"]
    assert steps[4].text == "x = 1"


def test_smoke_transforms(tmp_path: Path) -> None:
    ws = tmp_path
    argv = apply_transforms(["eval", "x.pt", "--data", "camvid:/data/camvid", "--device", "cuda:1"],
                            ws)
    assert argv[3] == f"camvid:{ws / 'data' / 'camvid'}" and argv[-1] == "cpu"
    argv = apply_transforms(["bench", "m", "--size", "1024x2048", "--backend", "compile"], ws)
    assert argv[argv.index("--size") + 1] == "128x256" and "0.5" in argv
    assert os.environ.get("FASTERSEG_DOCS_COMPILE") or "compile" not in argv
    assert apply_transforms(["demo"], ws) == ["demo", "--estimate-only"]
    argv = ["train", "-c", "cityscapes", "--set", "data.root=/data/cityscapes"]
    argv = apply_transforms(argv, ws)
    assert "train.epochs=1" in argv and argv[4] == f"data.root={ws / 'data' / 'cityscapes'}"
    assert apply_transforms(["train", "--resume", "runs/x"], ws) == ["train", "--resume", "runs/x"]
    if not _trt_available():
        with pytest.raises(SkipStep):
            apply_transforms(["bench", "m", "--device", "cuda", "--backend", "tensorrt"], ws)
    assert referenced_configs(["search", "-c", "cityscapes"]) == ["configs/search/cityscapes.yaml"]
    tiny = ["train", "-c", "configs/train/synthetic_tiny.yaml"]
    assert apply_transforms(tiny, ws) == tiny  # already CPU-sized: run as documented
    assert all(callable(globals().get(name)) for name, _, _ in SMOKE_TRANSFORMS)


def _trt_available() -> bool:
    import importlib.util

    import torch

    return importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


# Paths cited in prose: `fasterseg/...`, `configs/...`, `tests/...`, `benchmarks/...`, `docs/...`.
CITED = re.compile(r"`((?:fasterseg|configs|tests|benchmarks|docs)/[\w./*-]+)`")
LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda d: d.name)
def test_cited_paths_exist(doc: Path) -> None:
    """Every repository path a doc cites exists (globs must match), and .md links resolve."""
    text = doc.read_text()
    missing = []
    for m in CITED.finditer(text):
        p = m.group(1).rstrip(".")
        if not any(REPO.glob(p)) and not (REPO / p).exists():
            missing.append(p)
    for m in LINK.finditer(text):
        if "://" not in m.group(1) and not (doc.parent / m.group(1)).is_file():
            missing.append(m.group(1))
    assert not missing, f"{doc.name} cites paths that do not exist: {sorted(set(missing))}"
