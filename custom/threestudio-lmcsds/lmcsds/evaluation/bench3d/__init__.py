"""Text-to-3D against ground truth: guidances run through threestudio's ``launch.py`` on the
procedural-object prior, and each final asset scored against the true object.

For every prompt (objects of ``lmcsds.priors.objects3d``, some with captions never used in
training), every guidance and every seed, one run of the base config (only the guidance
differs), then (``metrics3d``, each metric checked on oracles: ``oracles.py``):

- silhouettes: IoU of the test renders' opacity with the object's masks over ``views`` orbit
  views at the best turn about z (reported, and whether an asymmetric object faces its front);
- geometry: the density level set whose silhouettes match the asset's own, its volume IoU
  with the object, the Chamfer distance between the opacity-0.5 surfaces seen by the test
  cameras, and the recall of the object's parts (mug handle, chair backrest and legs, ...);
- colour: per-pixel CIE76 Delta E over the object's pixels, the mean colour's Delta E, chroma,
  the colour spread against the truth's (a flat average fails it), clipped pixels;
- detail: band power below the prior's Nyquist relative to the object's renders;
- the object classifier: shape / colour / pattern accuracy and, for the asymmetric shapes,
  view accuracy and the Janus rate, both after the best turn;
- failures (empty scene: the worst case of every score, never dropped), wall time, seed
  diversity; ``supervised`` (the pipeline trained from the true renders) is the ceiling row.

Tables give means with 95% intervals (bootstrap over prompts and seeds) and differences to a
reference guidance paired per prompt and seed. Writes ``renders-<prompt>.png`` (ground truth
in the first row), ``per_prompt.md/csv``, ``summary.md/csv``, ``paired.csv``, ``summary.png``,
``iou.png`` and ``COMMAND.md``. Finished runs and scores are reused (``--force`` re-runs).

    LMCSDS_DEVICE=cpu python -m lmcsds bench3d --threestudio build/threestudio \\
        --config configs/lmcsds-dreamfusion-cpu.yaml --out results/bench3d --quick
"""

from ...commands import module_main
from .bench import add_arguments, bench3d, oracle_report, run
from .runs import (
    DEFAULT_GUIDANCES,
    FIXED_EPS,
    PROMPTS,
    QUICK_GUIDANCES,
    QUICK_PROMPTS,
    SUPERVISED,
    guidance_runs,
    slug,
)

__all__ = ["bench3d", "oracle_report", "guidance_runs", "slug", "PROMPTS", "QUICK_PROMPTS",
           "QUICK_GUIDANCES", "DEFAULT_GUIDANCES", "FIXED_EPS", "SUPERVISED", "add_arguments", "run", "main"]  # fmt: skip


def main(argv=None) -> None:
    module_main(__doc__, add_arguments, run, argv)
