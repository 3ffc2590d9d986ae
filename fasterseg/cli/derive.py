"""``fasterseg derive``: discrete teacher and student architectures from a search run.

Also imports the authors' raw architecture files (``--from-official``) in a compatibility mode
that reproduces the published nets exactly.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fasterseg.config.search_space import DETAIL_RATES
from fasterseg.errors import UserError

logger = logging.getLogger(__name__)

EXAMPLES = """examples:
  fasterseg derive runs/search/tiny              # writes teacher.json, student.json (+ .png)
  fasterseg derive runs/search/tiny -o archs/ --lut lut.json --target-ms 12
  fasterseg derive runs/search/tiny --branches 1 --json
  fasterseg derive runs/search/tiny --min-seg 4,3,2     # >= 4 cells at 1/8 on the 1/32 branch
  fasterseg derive runs/search/tiny --min-seg 0         # no minimum segment lengths
  fasterseg derive --from-official arch_0.pt arch_1.pt -o archs/official
  fasterseg derive --from-official arch_1.pt --to-params official_params.json

RUN_DIR must hold arch_params.json (written by `fasterseg search`); a path to that file works too.
Without a latency table the branch choice uses a MAC-count proxy for latency (and says so).
"""


def register(subparsers, parents) -> None:
    from fasterseg.cli.common import add_json

    p = subparsers.add_parser(
        "derive",
        parents=parents,
        help="derive discrete teacher/student architectures from a search run",
        description="Derive the discrete teacher and student from a search run's arch_params.json "
        "(paper section 3.4 and appendix B): operators and expansion ratios by argmax, "
        "downsample positions from beta, skips removed for shallower nets, and the branch set "
        "chosen by ACC x (LAT/T)^-0.07. Writes teacher.json, student.json and diagrams.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                   help="search run directory (or its arch_params.json)")
    p.add_argument("-o", "--out", metavar="DIR", help="output directory (default: RUN_DIR)")
    p.add_argument("--lut", metavar="LUT", help="latency table JSON for LAT (default: the run's "
                   "table if it still exists, else a MAC-count proxy)")
    p.add_argument("--target-ms", type=float, metavar="T",
                   help="latency target T in ms (default: 8.3 ms scaled to the table's device)")
    p.add_argument("--branches", type=int, metavar="B",
                   help="number of branches b (default: the space's)")
    p.add_argument("--min-len", type=int, metavar="N",
                   help="minimum cells per branch when removing skips (default round(L/3) + 2J)")
    p.add_argument("--min-seg", action="append", metavar="N,N[,N]",
                   help="minimum cells per rate of a branch, first number = cells at 1/8; the "
                   "count of numbers picks the branch (2: the 1/16 branch, 3: the 1/32 branch); "
                   "repeat for both; 0 switches the rule off (default: 2,3 and 3,3,2, the "
                   "authors' minimums)")
    p.add_argument("--teacher-branches", choices=("own", "student"), default="own",
                   help="teacher's branch set: chosen from its own scores, or the student's")
    p.add_argument("--compat", choices=("official",),
                   help="reproduce the authors' derivation quirks (for imported official params)")
    p.add_argument("--from-official", nargs="+", metavar="ARCH.pt",
                   help="import the authors' arch_0.pt / arch_1.pt (loaded with weights_only=True)")
    p.add_argument("--role", choices=("teacher", "student"),
                   help="with one --from-official file: override the detected role")
    p.add_argument("--to-params", metavar="OUT.json",
                   help="with --from-official: also write the arch_params.json form")
    p.add_argument("--detail-channels", type=int, default=0, metavar="N",
                   help="give the student a 1/4-resolution detail head of N channels for thin "
                   "classes (poles, signs; +1.5 %% MACs, 1.00-1.05x CPU latency at N=16); 0 "
                   "(default) is the paper's")
    p.add_argument("--detail-rate", type=int, choices=DETAIL_RATES, default=4, metavar="{2,4}",
                   help="the detail head's resolution: 4 (default) reads the stem's 1/4 feature, "
                   "2 its 1/2 feature (CamVid's poles are 2-4 pixels wide; +0.6-1.2 val mIoU there but "
                   "1.25-1.56x the student's CPU latency)")
    p.add_argument("--no-diagram", action="store_true", help="do not draw teacher.png/student.png")
    add_json(p)
    p.set_defaults(func=run)


def _write(arch, out: Path, role: str, diagram: bool) -> dict:
    from fasterseg.arch.diagram import draw_arch

    paths = {"json": str(arch.save(out / f"{role}.json"))}
    if diagram:
        paths["png"] = str(draw_arch(arch, out / f"{role}.png"))
    return paths


def _print_arch(arch, role: str, paths: dict) -> None:
    from fasterseg.arch.diagram import format_arch

    print(f"{role}: {paths['json']}" + (f"  (diagram {paths['png']})" if "png" in paths else ""))
    print(format_arch(arch))
    print()


def _matches_published(arch, role: str) -> bool:
    from fasterseg.arch.schema import load_arch, published_arch_path

    pub = load_arch(published_arch_path(f"fasterseg_{role}"))
    return (arch.stem_ratio, arch.head_ratio, arch.branches) == (pub.stem_ratio, pub.head_ratio,
                                                                 pub.branches)


def _run_official(args: argparse.Namespace) -> int:
    from fasterseg.arch.archparams import write_archparams
    from fasterseg.arch.official import derive_official, load_official, official_role
    from fasterseg.cli.common import emit_json

    if args.run_dir:
        raise UserError("give either RUN_DIR or --from-official, not both")
    if len(args.from_official) > 2:
        raise UserError(
            "--from-official takes one or two files (arch_0.pt teacher, arch_1.pt student)"
        )
    if args.role and len(args.from_official) > 1:
        raise UserError("--role applies to a single --from-official file")
    if not args.out and not args.to_params:
        raise UserError("--from-official needs -o DIR (architectures) and/or --to-params OUT.json")
    raws: dict = {}
    for f in args.from_official:
        raw = load_official(f)
        role = args.role or official_role(raw)
        if role in raws:
            raise UserError(f"two {role} files given ({raws[role][0]} and {f})")
        raws[role] = (f, raw)
    result: dict = {}
    if args.to_params:
        from fasterseg.arch.official import official_to_params

        params = official_to_params({r: raw for r, (_, raw) in raws.items()},
                                    source=", ".join(f for f, _ in raws.values()))
        write_archparams(args.to_params, params)
        print(f"arch params: {args.to_params} (raw logits, fasterseg.archparams/1)")
        result["params"] = args.to_params
    if args.out:
        out = Path(args.out)
        branches = {}
        for role, (f, raw) in sorted(raws.items()):
            arch, report = derive_official(raw, role, source=str(f))
            paths = _write(arch, out, role, not args.no_diagram)
            _print_arch(arch, role, paths)
            same = _matches_published(arch, role)
            print(f"{role}: {'identical to' if same else 'DIFFERENT from'} the published "
                  f"fasterseg_{role} (compat=official)")
            result[role] = paths["json"]
            result[f"{role}_matches_published"] = same
            branches[role] = report["branches"]
        result["branches"] = branches.get("student", branches.get("teacher"))
        first = out / ("teacher.json" if "teacher" in raws else "student.json")
        print(f"next: fasterseg train -c cityscapes --arch {first}")
    if args.json:
        emit_json(result)
    return 0


def _require_branch_scores(params: dict, b: int | None, path: Path) -> None:
    """Refuse, saying why, a run without the supernet scores the branch choice needs.

    `fasterseg search` with ``search.eval_every=0`` never validates the branch combinations, so
    ``branch_scores`` stays empty; derive can then only keep every branch (a single candidate).
    """
    from math import comb

    from fasterseg.arch.archparams import space_from_params

    space = space_from_params(params)
    n = len(space.rates)
    b = space.num_branches if b is None else b
    if not 1 <= b < n:  # out of range: derive says so; b == n: one candidate, no choice needed
        return
    role = "student" if params.get("student") is not None else "teacher"
    if (params.get("branch_scores") or {}).get(role):
        return
    raise UserError(
        f"{path} has no branch scores for the {role} (branch_scores is empty: the search never "
        f"validated its branch combinations, as with search.eval_every=0), so derive cannot "
        f"choose {b} of the {n} branches ({comb(n, b)} candidates); rerun the search with "
        f"--set search.eval_every=1, or keep every branch with --branches {n}"
    )


def parse_min_seg(values: list[str] | None) -> tuple[tuple[int, ...], ...]:
    """``--min-seg`` values -> ``DeriveRules.min_seg`` (given entries replace the defaults of
    the same length; ``0`` alone switches the rule off)."""
    from fasterseg.arch.derive import DEFAULT_MIN_SEG

    if not values:
        return DEFAULT_MIN_SEG
    if [v.strip() for v in values] == ["0"]:
        return ()
    given: dict[int, tuple[int, ...]] = {}
    for v in values:
        try:
            entry = tuple(int(x) for x in v.split(","))
        except ValueError:
            entry = ()
        if len(entry) < 2 or min(entry) < 0:
            raise UserError(
                f"--min-seg {v!r}: give cells per rate as 2 or 3 numbers >= 0 separated by commas "
                "(2,3 for the 1/16 branch, 3,3,2 for the 1/32 branch), or 0 to switch it off"
            )
        if len(entry) in given:
            raise UserError(f"--min-seg given twice for branches through {len(entry)} rates")
        given[len(entry)] = entry
    defaults = {len(e): e for e in DEFAULT_MIN_SEG}
    return tuple(sorted({**defaults, **given}.values(), key=len))


def _describe_min_seg(min_seg: tuple[tuple[int, ...], ...], rates: list[int]) -> str:
    if not min_seg:
        return "off"
    parts = [f"{','.join(map(str, e))} (1/{rates[len(e) - 1]} branch)" for e in min_seg
             if len(e) <= len(rates)]
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    from fasterseg.arch.archparams import FILENAME, load_archparams, space_from_params
    from fasterseg.arch.derive import DeriveRules, derive_from_params
    from fasterseg.cli.common import emit_json
    from fasterseg.utils.io import write_json

    if args.from_official:
        return _run_official(args)
    if args.role or args.to_params:
        raise UserError("--role and --to-params apply only with --from-official")
    if not args.run_dir:
        raise UserError(
            f"give a search run directory (holding {FILENAME}) or --from-official ARCH.pt"
        )
    src = Path(args.run_dir)
    params = load_archparams(src)
    if args.compat is None:
        _require_branch_scores(params, args.branches, src / FILENAME if src.is_dir() else src)
    run_dir = src if src.is_dir() else src.parent
    out = Path(args.out) if args.out else run_dir
    lut = args.lut
    if lut is None and params.get("lut"):
        if Path(params["lut"]).is_file():
            lut = params["lut"]
        else:
            logger.warning("the run's latency table %s is not here; pass --lut (using a MAC proxy)",
                           params["lut"])
    if args.min_len is not None and args.min_len < 1:
        raise UserError(f"--min-len must be >= 1, got {args.min_len}")
    if args.compat and (args.min_seg or args.min_len is not None):
        raise UserError("--min-seg and --min-len do not apply with --compat official (the "
                        "authors' derivation has its own fixed ranges)")
    min_seg = parse_min_seg(args.min_seg)
    rates = space_from_params(params).rates
    deep = [v for v in args.min_seg or [] if len(v.split(",")) > len(rates)]
    if deep:
        raise UserError(f"--min-seg {deep[0]}: the search space has {len(rates)} rates, so a "
                        f"branch passes through at most {len(rates)}")
    rules = DeriveRules(min_len=args.min_len, min_seg=min_seg,
                        teacher_branches=args.teacher_branches)
    teacher, student, report = derive_from_params(
        params, lut=lut, target_ms=args.target_ms, b=args.branches, rules=rules,
        compat=args.compat, source=str(src),
    )
    if args.detail_channels and student is not None:
        student = student.with_detail(args.detail_channels, args.detail_rate)
        report.setdefault("warnings", []).append(
            "student: its latency-table estimate leaves out the detail head (not in the search "
            "space's table); `fasterseg bench` measures the whole network")
    epoch = params.get("epoch")
    print(f"derived from {src}" + (f" (epoch {epoch})" if epoch is not None else ""))
    lat = report.get("latency", {})
    if lat:
        kinds = {"lut": f"latency table {lut}", "mac_proxy": "MAC-count proxy (no latency table)"}
        kind = kinds.get(lat["kind"], lat["kind"])
        print(f"LAT: {kind}; target T = {lat['target']:.4g} {lat['unit']} ({lat['target_note']})")
    if args.compat is None:
        print(f"minimum cells per rate: {_describe_min_seg(min_seg, rates)}")
    print()
    result: dict = {"teacher": None, "student": None}
    for role, arch in (("teacher", teacher), ("student", student)):
        if arch is None:
            continue
        paths = _write(arch, out, role, not args.no_diagram)
        rep = report.get(role, {})
        for row in rep.get("candidates", []):
            if "objective" in row:
                mark = " <- chosen" if row["branches"] == rep["branches"] else ""
                print(f"  {role} {row['key']:>6}: miou {row['miou']:.4f}  "
                      f"LAT {row['latency']:.4g}  objective {row['objective']:.5f}{mark}")
            elif "note" in row:
                print(f"  {role} {row.get('key', row['branches'])}: {row['note']}")
        _print_arch(arch, role, paths)
        result[role] = paths["json"]
    write_json(out / "derive_report.json", report)
    student_rep = report.get("student") or report.get("teacher") or {}
    result["branches"] = student_rep.get("branches")
    if lat.get("kind") == "lut":
        result["latency_ms"] = student_rep.get("latency")
    for w in report.get("warnings", []):
        logger.warning(w)
    steps = []
    if teacher is not None:
        steps.append(f"fasterseg train -c CONFIG --arch {out / 'teacher.json'} --out runs/teacher")
    if student is not None:
        kd = " --teacher runs/teacher/best.pt" if teacher is not None else ""
        steps.append(f"fasterseg train -c CONFIG --arch {out / 'student.json'}{kd}")
    for i, step in enumerate(steps):
        print(("next: " if i == 0 else "      ") + step)
    if args.json:
        emit_json(result)
    return 0
