"""The benchmark's prompts and runs: one ``RunSpec`` per guidance (only the guidance differs
from the base config), each over the chosen seeds, plus the supervised ceiling."""

from dataclasses import dataclass, replace
from typing import List, Optional, Sequence

from ...core.gradients import NFSD_NEGATIVE_PROMPT
from ...priors.objects3d import ObjectSpec
from ..compare import BUILTIN_GUIDANCE, RunSpec

PROMPTS = [  # primitives, asymmetric objects, and captions never used in training
    ObjectSpec("cube", "red", "plain"),
    ObjectSpec("sphere", "blue", "striped"),
    ObjectSpec("cylinder", "yellow", "checkered"),
    ObjectSpec("mug", "green", "striped"),
    ObjectSpec("chair", "purple", "plain"),
    ObjectSpec("snowman", "orange", "plain"),
    ObjectSpec("cone", "blue", "striped"),  # held out
    ObjectSpec("mug", "red", "checkered"),  # held out
]
QUICK_PROMPTS = [ObjectSpec("cube", "red", "plain"), ObjectSpec("mug", "green", "striped")]
# steps per run: the smallest budget at which the supervised ceiling shows the red checkered
# mug's checks and handle (docs/bench3d.md, "The budget"); --quick is a smoke test at 400
BUDGET, QUICK_STEPS = 1600, 400
REFINE_STEPS = 400  # the mesh stage's steps per run (--refine)
CSD_NEGATIVE_PROMPT = "oversaturated color, ugly, tiling, low quality, noisy"  # its IF config
QUICK_GUIDANCES = ["supervised", "sds-w21", "lmc-sds-w10"]
FIXED_EPS = "lmc-sds-fixed-w20"
# a plain run: the ceiling, SDS (built-in and at the prior's resolution), LMC-SDS and the
# variants its paper compares with; NFSD and CSD run with --guidances all or by name
DEFAULT_GUIDANCES = ["supervised", "sds-builtin", "sds-builtin-s100", "sds-w21", "sds-w101",
                     "lmc-sds-w10", "lmc-sds-w20", FIXED_EPS, "ms-sds-w21",
                     "lmc-sds-w10-perpneg"]  # fmt: skip
# --guidances remedies: SDS and LMC-SDS with and without each remedy for detail (t annealed
# linearly or by DreamTime, SDI's inverted noise with its annealed t, t capped at 800 after the
# first quarter: docs/detail-3d.md), beside the ceiling
REMEDY_GUIDANCES = ["supervised"] + [f"{base}{remedy}" for base in ("sds-w21", "lmc-sds-w10")
                                     for remedy in ("", "-linear", "-dreamtime", "-sdi", "-cap800")]  # fmt: skip
SUPERVISED = "supervised"
LMCSDS = "lmc-sds-deep-floyd-guidance"


@dataclass
class BenchRun:
    spec: RunSpec
    seed: int
    steps: Optional[int] = None  # its own step count (a mesh-stage run); None: the benchmark's

    @property
    def name(self) -> str:
        return f"{self.spec.label}-s{self.seed}"


REFINED = "-refine"  # label suffix of a run's mesh stage


def refine_runs(guidance: dict, runs: Sequence[BenchRun], steps: int) -> List[BenchRun]:
    """The mesh stage of each run: its guidance built from the refine config's guidance
    section ``guidance`` (so its t range), label ``<label>-refine``, ``steps`` steps."""
    specs = {s.label: s for s in run_specs(guidance, steps)}
    return [BenchRun(replace(specs[r.spec.label], label=r.spec.label + REFINED,
                             note=specs[r.spec.label].note + ", mesh stage"), r.seed, steps)
            for r in runs]  # fmt: skip


def parse_seeds(text: str) -> List[int]:
    """``--seeds``: a count N (seeds 0..N-1) or a comma-separated list of distinct seeds."""
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give a count (3) or distinct seeds (0,5,9)") from None
    if len(seeds) == 1 and "," not in str(text):
        if seeds[0] < 1:
            raise ValueError(f"--seeds {text!r}: a single number is a count (seeds 0..N-1) and "
                             f"must be >= 1; for seed 0 alone write --seeds 1 or --seeds 0,")  # fmt: skip
        seeds = list(range(seeds[0]))
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ValueError(f"--seeds {text!r}: seeds must be distinct and >= 0")
    return seeds


def supervised_spec() -> RunSpec:
    """The ceiling: the same pipeline trained from the true object's renders."""
    return RunSpec(SUPERVISED, "lmcsds-supervised-guidance",
                   {"object_caption": "${system.prompt_processor.prompt}"},
                   "the ceiling: L2 to the true object under each batch's cameras and shading")  # fmt: skip


def run_specs(guidance: dict, steps: int = 400, fixed_omega: float = 20.0) -> List[RunSpec]:
    """The supervised ceiling; built-in SDS at its default scale and at DreamFusion's 100 (64
    px renders), SDS at the prior's resolution with the same two weights, LMC-SDS at omega 10
    and 20 and with fixed eps; then the baselines at their published settings: NFSD (omega
    7.5, its negative prompt), multi-step SDS (5 steps, omega 21), CSD (omega 10, the public
    DeepFloyd config's negative prompt with its weight annealed 0 -> 1 over the first half of
    ``steps``, and at the public config's own settings), and LMC-SDS omega 10 with Perp-Neg
    prompts. DDS needs a source image, which text-to-3D has not. ``guidance`` is the base
    config's guidance section."""
    shared = {k: guidance[k] for k in ("pretrained_model_name_or_path", "half_precision_weights",
                                       "min_step_percent", "max_step_percent",
                                       "view_dependent_prompting") if k in guidance}  # fmt: skip
    sds = dict(guidance, loss_type="sds", scale_by_omega=False, weighting_strategy="sds",
               fixed_noise=False)  # fmt: skip
    lmc = dict(guidance, loss_type="lmc-sds", fixed_noise=False)
    return [
        supervised_spec(),
        RunSpec("sds-builtin", BUILTIN_GUIDANCE, dict(shared), "built-in, scale 20 (omega 21), 64 px"),
        RunSpec("sds-builtin-s100", BUILTIN_GUIDANCE, dict(shared, guidance_scale=100.0),
                "built-in, DreamFusion's scale 100, 64 px"),
        RunSpec("sds-w21", LMCSDS, dict(sds, guidance_scale=21.0),
                "SDS as the built-in (omega 21) at the prior's resolution"),
        RunSpec("sds-w101", LMCSDS, dict(sds, guidance_scale=101.0),
                "SDS at omega 101 (scale 100) at the prior's resolution"),
        RunSpec("lmc-sds-w10", LMCSDS, dict(lmc, guidance_scale=10.0), "LMC-SDS, omega 10"),
        RunSpec("lmc-sds-w10-raw", LMCSDS, dict(lmc, guidance_scale=10.0, corrective_input="raw"),
                "LMC-SDS, omega 10, the corrective sees the raw render (the paper's)"),
        RunSpec("lmc-sds-w20", LMCSDS, dict(lmc, guidance_scale=20.0), "LMC-SDS, omega 20"),
        RunSpec(FIXED_EPS, LMCSDS, dict(lmc, guidance_scale=fixed_omega, fixed_noise=True),
                f"LMC-SDS, omega {fixed_omega:g}, fixed eps"),
        RunSpec("nfsd-w7.5", LMCSDS, dict(guidance, loss_type="nfsd", guidance_scale=7.5,
                fixed_noise=False, negative_prompt=NFSD_NEGATIVE_PROMPT),
                "NFSD, its nominal omega 7.5 and negative prompt"),
        RunSpec("ms-sds-w21", LMCSDS, dict(sds, loss_type="ms-sds", guidance_scale=21.0,
                ms_sds_steps=5), "multi-step SDS, 5 DDIM steps, omega 21"),
        RunSpec("csd-w10", LMCSDS, dict(guidance, loss_type="csd", guidance_scale=10.0,
                fixed_noise=False, negative_prompt=CSD_NEGATIVE_PROMPT,
                csd_negative_weight=[0, 0.0, 1.0, steps // 2]),
                "CSD, omega 10, negative prompt weighted 0 -> 1 over the first half"),
        RunSpec("lmc-sds-w10-perpneg", LMCSDS, dict(lmc, guidance_scale=10.0),
                "LMC-SDS, omega 10, Perp-Neg prompts", {"use_perp_neg": True}),
        RunSpec("csd-public", LMCSDS, dict(guidance, loss_type="csd", guidance_scale=1.0,
                fixed_noise=False, negative_prompt=CSD_NEGATIVE_PROMPT, grad_normalize=True,
                weighting_strategy="uniform", csd_negative_weight=[0, 0.0, 1.0, steps // 2]),
                "CSD as its public DeepFloyd config: omega_1 1, w = 1, normalised gradient, "
                "Perp-Neg", {"use_perp_neg": True}),
    ] + [spec for label, base in (("sds-w21", dict(sds, guidance_scale=21.0)),
                                  ("lmc-sds-w10", dict(lmc, guidance_scale=10.0)))
         for spec in remedy_specs(label, base, steps)]  # fmt: skip


def remedy_specs(label: str, guidance: dict, steps: int) -> List[RunSpec]:
    """``label`` with t annealed linearly (SDI's t_anneal), by DreamTime's schedule, SDI
    (DDIM-inverted noise: 10 steps, omega -6.5, eta 0.3, with the linear anneal, as
    threestudio's sdi config), and with max_step falling from 0.98 to 0.8 over the first quarter
    of ``steps`` (the detail diagnosis: t > 800 erases an existing pattern)."""
    return [
        RunSpec(f"{label}-linear", LMCSDS, dict(guidance, time_schedule="linear"),
                f"{label}, t annealed linearly from max to min"),
        RunSpec(f"{label}-dreamtime", LMCSDS, dict(guidance, time_schedule="dreamtime"),
                f"{label}, DreamTime's t schedule (800, 500, 300, 100)"),
        RunSpec(f"{label}-sdi", LMCSDS, dict(guidance, time_schedule="linear", noise="inversion",
                inversion_guidance_scale=-6.5, inversion_n_steps=10, inversion_eta=0.3),
                f"{label} with SDI's inverted noise, t annealed linearly"),
        RunSpec(f"{label}-cap800", LMCSDS,
                dict(guidance, max_step_percent=[0, 0.98, 0.8, max(steps // 4, 1)]),
                f"{label}, max t 980 -> 800 over the first quarter, then 800"),
    ]  # fmt: skip


def guidance_runs(guidance: dict, seeds: Sequence[int] = (0,), steps: int = 400) -> List[BenchRun]:
    """Every run spec over every seed (folders ``<label>-s<seed>``)."""
    return [BenchRun(spec, seed) for spec in run_specs(guidance, steps) for seed in seeds]


def slug(spec: ObjectSpec) -> str:
    """Folder name of an object, e.g. "green-striped-mug"."""
    return "-".join([spec.colour] + [spec.pattern] * (spec.pattern != "plain") + [spec.shape])
