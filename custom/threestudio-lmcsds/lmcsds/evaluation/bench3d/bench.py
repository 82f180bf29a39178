"""The benchmark run: train every (prompt, guidance, seed) through ``launch.py``, score each
final asset as it finishes (its record), write the tables. Finished runs are reused."""

import json
import os
import shlex
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence, Set, Tuple

from ...priors.objects3d import ObjectSpec, parse_caption
from ...priors.objects_data import HELD_OUT
from ..compare import check_threestudio_dir, in_slots, launch, write_config
from .records import copy_empty_record, current_record, read_views, run_finished, write_record
from .report import save_renders, view_picks, write_results
from .runs import (
    BUDGET,
    DEFAULT_GUIDANCES,
    PROMPTS,
    QUICK_GUIDANCES,
    QUICK_PROMPTS,
    QUICK_STEPS,
    REFINE_STEPS,
    REMEDY_GUIDANCES,
    BenchRun,
    guidance_runs,
    parse_seeds,
    refine_runs,
    slug,
)
from .truth import ground_truth

DEFAULT_REFERENCE = "lmc-sds-w10"
CLASSIFIER = "load/lmcsds/priors/objects-classifier.safetensors"
REFINE_CONFIG = "configs/lmcsds-magic3d-refine-cpu.yaml"
# an OUT folder under git keeps the tables and each run's record (records.py), not the
# checkpoints, renders and logs they were made from: committed, the benchmark continues elsewhere
GITIGNORE = "logs/\nruns/*/*/*\n!runs/*/*/scores.json\n!runs/*/*/views.png\n"


def run_defaults(steps: int) -> List[str]:
    """Overrides of every benchmark run (before the user's): only the final test pass is
    scored, so validation runs once at the end and no guidance images are saved."""
    return [f"trainer.val_check_interval={steps}", "system.guidance_eval_every=0"]


def bench3d(
    run_dir: Path,
    base_config: Path,
    out: Path,
    steps: int = BUDGET,
    prompts: Sequence[ObjectSpec] = PROMPTS,
    guidances: Optional[Sequence[str]] = None,
    seeds: Sequence[int] = (0,),
    views: int = 24,
    classifier_path: str = CLASSIFIER,
    overrides: Sequence[str] = (),
    force: bool = False,
    jobs: int = 1,
    reference: Optional[str] = DEFAULT_REFERENCE,
    train: bool = True,
    refine_config: Optional[Path] = None,
    refine_steps: int = REFINE_STEPS,
    tables: Optional[str] = None,
) -> List[dict]:
    """``refine_config``: also refine every run as a mesh (the mesh stage, ``refine_steps``
    steps, from the run's checkpoint) and score it as ``<label>-refine``. ``tables``: a
    subfolder of ``out`` for the tables, figures and COMMAND.md (default ``out`` itself), so
    that several selections of runs in one folder keep their own tables."""
    from omegaconf import OmegaConf

    from ...priors.objects_classifier import load_object_classifier

    run_dir, out = check_threestudio_dir(run_dir), out.resolve()
    if not Path(classifier_path).is_file():
        raise FileNotFoundError(f"--classifier {classifier_path} not found: train it with "
                                f"`python -m lmcsds.priors.objects_classifier`")  # fmt: skip
    classifier = load_object_classifier(classifier_path)
    base = OmegaConf.load(base_config)
    effective = OmegaConf.merge(base, OmegaConf.from_dotlist([o for o in overrides if "=" in o]))
    runs = guidance_runs(OmegaConf.to_container(base.system.guidance, resolve=False), seeds, steps)
    if guidances:
        unknown = set(guidances) - {r.spec.label for r in runs}
        if unknown:
            raise ValueError(f"unknown guidance(s) {sorted(unknown)}; choose from "
                             f"{sorted({r.spec.label for r in runs})}")  # fmt: skip
        runs = [r for r in runs if r.spec.label in guidances]
    refined = {}
    if refine_config is not None:
        fine = OmegaConf.to_container(OmegaConf.load(refine_config).system.guidance, resolve=False)
        refined = {r.name: f for r, f in zip(runs, refine_runs(fine, runs, refine_steps))}
    (out / "configs").mkdir(parents=True, exist_ok=True)
    if not (out / ".gitignore").exists():
        (out / ".gitignore").write_text(GITIGNORE)
    (out / "logs").mkdir(exist_ok=True)
    configs = {r.spec.label: write_config(base_config, r.spec, out / "configs" / f"{r.spec.label}.yaml")
               for r in runs}  # fmt: skip
    configs.update({r.spec.label: write_config(refine_config, r.spec, out / "configs" / f"{r.spec.label}.yaml")
                    for r in refined.values()})  # fmt: skip
    todo = training_queue(out, prompts, runs, seeds, steps, force, refined) if train else []
    truths, lock = {}, threading.Lock()

    def truth_of(spec: ObjectSpec):
        with lock:
            if spec not in truths:
                truths[spec] = ground_truth(spec, views, effective.data)
            return truths[spec]

    def train_one(job: int, spec: ObjectSpec, run: BenchRun) -> None:
        trial = out / "runs" / slug(spec) / run.name
        if not run_finished(trial, steps) or force:
            train(job, spec, run, trial, steps, [])
        fine = refined.get(run.name)
        if fine is None or (not force and run_finished(out / "runs" / slug(spec) / fine.name,
                                                        refine_steps)):  # fmt: skip
            return
        level = json.loads((trial / "scores.json").read_text())["occupancy_level"]
        if level == float("inf"):  # no surface to convert: the mesh stage is empty too
            copy_empty_record(trial, out / "runs" / slug(spec) / fine.name, refine_steps)
            return
        if not (trial / "ckpts" / "last.ckpt").is_file():
            print(f"bench3d: {slug(spec)}/{fine.name} not trained: the coarse run has only "
                  f"its record (no checkpoint to refine from)")  # fmt: skip
            return
        train(job, spec, fine, out / "runs" / slug(spec) / fine.name, refine_steps,
              [f"system.geometry_convert_from={trial / 'ckpts' / 'last.ckpt'}",
               f"system.geometry_convert_override.isosurface_threshold={level}"])  # fmt: skip

    def train(job: int, spec: ObjectSpec, run: BenchRun, trial: Path, steps: int,
              extra: List[str]) -> None:  # fmt: skip
        common = [
            f"exp_root_dir={out / 'runs'}", f"name={slug(spec)}", f"tag={run.name}",
            "use_timestamp=false", f"seed={run.seed}", f"trainer.max_steps={steps}",
            f"system.prompt_processor.prompt={spec.caption()}",
            f"data.n_test_views={views + 1}", *run_defaults(steps), *extra, *overrides,
        ]  # fmt: skip
        if jobs == 1:
            print(f"== {slug(spec)}/{run.name}: {run.spec.note}")
        start = time.time()
        launch(run_dir, configs[run.spec.label], common,
               out / "logs" / f"{slug(spec)}-{run.name}.log", steps, f"{slug(spec)}/{run.name}",
               trial, threads=max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None,
               position=job if jobs > 1 else None)  # fmt: skip
        (trial / "wall_time.json").write_text(
            json.dumps({"wall_s": time.time() - start, "jobs": jobs})
        )
        write_record(trial, spec, truth_of(spec), classifier, steps)

    for spec in prompts if not force else []:  # finished, not yet recorded (interrupted)
        for run in list(runs) + list(refined.values()):
            trial = out / "runs" / slug(spec) / run.name
            done = run.steps or steps
            if not (trial / "scores.json").is_file() and run_finished(trial, done):
                write_record(trial, spec, truth_of(spec), classifier, done)
        for name, fine in refined.items():  # mesh stages of coarse assets without surface
            coarse = out / "runs" / slug(spec) / name / "scores.json"
            if (coarse.is_file() and not (out / "runs" / slug(spec) / fine.name / "scores.json").is_file()
                    and json.loads(coarse.read_text()).get("occupancy_level") == float("inf")):  # fmt: skip
                copy_empty_record(
                    coarse.parent, out / "runs" / slug(spec) / fine.name, refine_steps
                )
    in_slots(jobs, train_one, todo)

    runs = list(runs) + list(refined.values())
    report = out / tables if tables else out
    report.mkdir(parents=True, exist_ok=True)
    complete = complete_cells(out, prompts, runs, steps)
    rows = []
    for spec in prompts:
        finished = []
        for run in runs:
            trial = out / "runs" / slug(spec) / run.name
            if (slug(spec), run.seed) not in complete:
                continue
            scores = trial / "scores.json"
            done = run.steps or steps
            if not (scores.is_file() and json.loads(scores.read_text()).get("steps") == done):
                write_record(trial, spec, truth_of(spec), classifier, done)  # --report-only
            row = current_record(trial, spec, truth_of(spec))
            row.update(prompt=spec.caption(), guidance=run.spec.label, seed=run.seed,
                       held_out=spec in HELD_OUT)  # fmt: skip
            rows.append(row)
            finished.append((run.name, read_views(trial, views)))
        if not finished:
            continue
        held = " (caption never used in training)" if spec in HELD_OUT else ""
        renders = [("ground truth", truth_of(spec).rgb[view_picks(views)])] + finished
        save_renders(
            f"{spec.caption()}{held}", renders, report / f"renders-{slug(spec)}.png", views
        )
    total = len(prompts) * len(runs)
    partial = None
    if len(rows) < total:
        cells = sorted({(r["prompt"], r["seed"]) for r in rows})
        partial = (f"Partial: {len(rows)} of {total} runs, the {len(cells)} (prompt, seed) "
                   f"cells in which every guidance finished; the other runs are left out")  # fmt: skip
        print(f"bench3d: {partial}")
    if not rows:
        raise RuntimeError(f"no (prompt, seed) in {out / 'runs'} has every guidance finished at "
                           f"{steps} steps: nothing to score yet")  # fmt: skip
    write_results(rows, report, steps, views, reference, partial)
    write_command(report, run_dir, base_config, steps, prompts, guidances, seeds, views, overrides,
                  jobs, reference, refine_config, refine_steps, out)  # fmt: skip
    return rows


def training_queue(out: Path, prompts: Sequence[ObjectSpec], runs: Sequence[BenchRun],
                   seeds: Sequence[int], steps: int, force: bool = False, refined=None,
                   ) -> List[Tuple[ObjectSpec, BenchRun]]:  # fmt: skip
    """The runs still to train (or whose mesh stage, ``refined[run.name]``, is), seed-major
    (every prompt and guidance at the first seed, then the next), so that an interrupted
    benchmark holds whole tables at fewer seeds."""
    refined = refined or {}

    def due(spec: ObjectSpec, run: BenchRun) -> bool:
        fine = refined.get(run.name)
        return (force or not run_finished(out / "runs" / slug(spec) / run.name, steps)
                or (fine is not None and not run_finished(out / "runs" / slug(spec) / fine.name,
                                                          fine.steps)))  # fmt: skip

    return [(spec, run) for seed in seeds for spec in prompts for run in runs
            if run.seed == seed and due(spec, run)]  # fmt: skip


def complete_cells(out: Path, prompts: Sequence[ObjectSpec], runs: Sequence[BenchRun],
                   steps: int) -> Set[Tuple[str, int]]:  # fmt: skip
    """(prompt folder, seed) pairs in which every guidance's run reached ``steps``: the only
    runs reported, so that every guidance is compared on the same prompts and seeds."""
    labels = {r.spec.label for r in runs}
    done = {}
    for spec in prompts:
        for run in runs:
            if run_finished(out / "runs" / slug(spec) / run.name, run.steps or steps):
                done.setdefault((slug(spec), run.seed), set()).add(run.spec.label)
    return {cell for cell, got in done.items() if got == labels}


def shown(path) -> str:
    """A path as a reader should retype it: relative to the working folder when inside it."""
    path = Path(path).absolute()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def write_command(out, run_dir, base_config, steps, prompts, guidances, seeds, views, overrides,
                  jobs=1, reference=DEFAULT_REFERENCE, refine_config=None,
                  refine_steps=REFINE_STEPS, runs_in=None) -> None:  # fmt: skip
    cmd = ["LMCSDS_DEVICE=cpu", "python", "-m", "lmcsds", "bench3d", "--threestudio",
           shown(run_dir), "--config", shown(base_config), "--out", shown(runs_in or out),
           "--steps", str(steps),
           "--prompts", ";".join(p.caption() for p in prompts), "--seeds",
           ",".join(map(str, seeds)), "--views", str(views)]  # fmt: skip
    if guidances:
        cmd += ["--guidances", ",".join(guidances)]
    if reference != DEFAULT_REFERENCE:
        cmd += ["--reference", str(reference)]
    if jobs > 1:
        cmd += ["--jobs", str(jobs)]
    if refine_config is not None:
        cmd += [
            "--refine",
            "--refine-config",
            shown(refine_config),
            "--refine-steps",
            str(refine_steps),
        ]
    if runs_in is not None and runs_in != out:
        cmd += ["--tables", out.name]
    cmd += list(overrides)
    (out / "COMMAND.md").write_text(
        "Made with:\n\n    "
        + " ".join(shlex.quote(c) if i > 0 else c for i, c in enumerate(cmd))
        + "\n"
    )


def oracle_report(base_config: Path, out: Path, prompts: Sequence[ObjectSpec], views: int,
                  classifier_path: str = CLASSIFIER) -> str:  # fmt: skip
    """Every metric on the truth and its known failures (``oracles.py``), as a markdown table."""
    from omegaconf import OmegaConf

    from ...priors.objects_classifier import load_object_classifier
    from .oracles import score_oracles
    from .report import HEADLINE, _table

    classifier = load_object_classifier(classifier_path)
    data = OmegaConf.load(base_config).data
    keys = [k for k, _ in HEADLINE] + ["volume_iou", "delta_e_mean", "pattern_acc", "view_acc"]
    text = ["# The 3D metrics on oracles", "",
            "Fake assets made from the true object, scored through the benchmark's own file "
            f"path ({views} views; `lmcsds bench3d --oracles`).", ""]  # fmt: skip
    with tempfile.TemporaryDirectory() as trials:  # the fake trial folders
        for spec in prompts:
            rows = score_oracles(spec, views, data, classifier, Path(trials) / slug(spec))
            table = [dict(r, oracle=name) for name, r in rows.items()]
            text += [f"## {spec.caption()}", "", _table(table, ["oracle"] + keys), ""]
    (out / "oracles.md").write_text("\n".join(text))
    return "\n".join(text)


def add_arguments(p) -> None:
    p.add_argument("--threestudio", default=".", help="threestudio folder with the extension")
    p.add_argument("--config", default="configs/lmcsds-dreamfusion-cpu.yaml",
                   help="base config (LMC-SDS on the procedural-object prior); guidance swapped")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder (reused runs are kept there)")
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke test: {len(QUICK_PROMPTS)} prompts x {', '.join(QUICK_GUIDANCES)}, "
                        f"{QUICK_STEPS} steps, one seed")  # fmt: skip
    p.add_argument("--steps", type=int, default=None,
                   help=f"training steps per run (default {BUDGET}: the budget where the ceiling "
                        f"shows detail; {QUICK_STEPS} with --quick)")  # fmt: skip
    p.add_argument("--prompts", default=None,
                   help="';'-separated captions of procedural objects (default: the 8 of PROMPTS)")  # fmt: skip
    p.add_argument("--guidances", default=None,
                   help=f"comma-separated run labels, 'all', or 'remedies' ({','.join(REMEDY_GUIDANCES)}; "
                        f"default: {','.join(DEFAULT_GUIDANCES)})")  # fmt: skip
    p.add_argument("--seeds", default="1",
                   help="a count N (seeds 0..N-1) or distinct seeds, e.g. 0,5,9; folders "
                        "<guidance>-s<seed>")  # fmt: skip
    p.add_argument("--reference", default=DEFAULT_REFERENCE,
                   help="guidance the paired-difference table subtracts")  # fmt: skip
    p.add_argument("--views", type=int, default=24, help="orbit views scored per asset")
    p.add_argument("--classifier", default=CLASSIFIER,
                   help="procedural-object classifier (shape, colour, pattern, view)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="re-run finished runs")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, sharing the CPU cores (2 on a 2-core machine: "
                        "~1.35x the throughput; wall times are then per run under that load)")  # fmt: skip
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: score the finished runs and write the tables from the "
                        "(prompt, seed) cells in which every guidance finished")  # fmt: skip
    p.add_argument("--oracles", action="store_true",
                   help="score the truth and its known failures instead (no training): "
                        "OUT/oracles.md")  # fmt: skip
    p.add_argument("--tables", default=None,
                   help="write the tables, figures and COMMAND.md into OUT/TABLES (default: OUT), "
                        "so that selections of runs sharing OUT keep their own")  # fmt: skip
    p.add_argument("--refine", action="store_true",
                   help="also refine every run as a mesh (Magic3D-style, from its checkpoint) and "
                        "score it as <guidance>-refine")  # fmt: skip
    p.add_argument("--refine-config", default=REFINE_CONFIG,
                   help="the mesh stage's base config (guidance swapped as for the coarse runs)")  # fmt: skip
    p.add_argument("--refine-steps", type=int, default=REFINE_STEPS,
                   help="training steps of each mesh-stage run")  # fmt: skip
    p.add_argument("overrides", nargs="*",
                   help="extra threestudio overrides, key=value (with --refine: of both stages)")  # fmt: skip


def run(args) -> None:
    prompts = QUICK_PROMPTS if args.quick else PROMPTS
    if args.prompts:
        prompts = [parse_caption(p) for p in args.prompts.split(";") if p.strip()]
    if args.oracles:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        print(
            oracle_report(Path(args.config), Path(args.out), prompts, args.views, args.classifier)
        )
        return
    guidances = QUICK_GUIDANCES if args.quick else DEFAULT_GUIDANCES
    if args.guidances == "all":
        guidances = None
    elif args.guidances == "remedies":
        guidances = REMEDY_GUIDANCES
    elif args.guidances:
        guidances = [g for g in args.guidances.split(",") if g]
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    steps = args.steps or (QUICK_STEPS if args.quick else BUDGET)
    bench3d(Path(args.threestudio), Path(args.config), Path(args.out), steps, prompts,
            guidances, parse_seeds(args.seeds), args.views, args.classifier, args.overrides,
            args.force, args.jobs, args.reference, not args.report_only,
            Path(args.refine_config) if args.refine else None, args.refine_steps, args.tables)  # fmt: skip
