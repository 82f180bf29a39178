"""The model card written beside an exported corrective: what it was trained for and how.

``IF-I-XL-v1.0.safetensors`` gets ``IF-I-XL-v1.0.md``: Hugging Face model-card front matter,
the prior, data, schedule, normalisation and architecture, and (after ``--val-images``) the
report's summary and figures. To publish, upload both files, the card as the repo's README.md.
"""

import json
import os
from pathlib import Path
from typing import Optional

from .. import __version__
from ..core.atomic import atomic_write
from ..core.checkpoint import read_meta


def card_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".md")


def model_card(weights: Path, cfg, data: str, report_dir: Optional[Path] = None) -> str:
    """Markdown of the card; ``cfg`` is the trainer's TrainConfig, ``data`` says what it saw."""
    weights = Path(weights)
    meta = read_meta(weights)
    arch = meta.architecture
    lines = [
        "---",
        "library_name: threestudio-lmcsds",
        "tags: [score-distillation, lmc-sds, text-to-3d, deepfloyd-if, threestudio]",
        "license: other",
        "---",
        "",
        f"# LMC-SDS corrective for {meta.prior_id}",
        "",
        "The learned manifold corrective bhat_psi of *Score Distillation Sampling with Learned "
        "Manifold Corrective* (Alldieck et al., ECCV 2024) for the prior "
        f"`{meta.prior_id}` at {meta.resolution}x{meta.resolution}, for "
        "`lmc-sds-deep-floyd-guidance` (threestudio-lmcsds). A corrective models one prior's "
        "denoiser: use it only with that prior.",
        "",
        "    system.guidance.corrective_path=hf://ORG/REPO/" + weights.name,
        "",
        "| | |",
        "|---|---|",
        f"| file | `{weights.name}` (format version {meta.format_version}) |",
        f"| prior | `{meta.prior_id}`, {meta.resolution} px, {meta.num_train_timesteps} timesteps |",
        f"| normalisation (Eq. 10) | `{meta.normalization}` |",
        f"| architecture | U-Net, {arch.depth} levels, {arch.base_channels} base channels, "
        f"{'residual (z + U(z, t))' if arch.residual else 'tanh(U(z, t)) (the paper)'} |",
        f"| training | {meta.training_steps} steps of batch {cfg.batch_size}, Adam lr {cfg.lr:g} "
        f"x{cfg.lr_decay:g} every {cfg.lr_decay_every} steps, seed {cfg.seed}, "
        f"precision {cfg.precision} |",
        f"| data | {data} |",
        f"| made with | threestudio-lmcsds {__version__} |",
    ]
    report = Path(report_dir) / "report.json" if report_dir else None
    if report is not None and report.is_file():
        r = json.loads(report.read_text())
        o = r["overall"]
        rel = os.path.relpath(Path(report_dir), weights.parent)
        lines += [
            "",
            "## Held-out report",
            "",
            f"{r['num_images']} held-out images, {r['mc_samples']} prior passes each for the "
            f"Monte-Carlo E[zhat_t]: relative error {o['rel_err_mc']:.3f} (no corrective: "
            f"{o['rel_err_mc_identity']:.3f}); L_k {o['loss_k']:.5f} (no corrective "
            f"{o['loss_k_identity']:.5f}). Full tables: [{rel}/report.md]({rel}/report.md).",
            "",
            f"![power spectra]({rel}/spectra.png)",
            "",
            f"![samples]({rel}/samples.png)",
        ]
    return "\n".join(lines) + "\n"


def write_model_card(weights: Path, cfg, data: str, report_dir: Optional[Path] = None) -> Path:
    path = card_path(weights)
    text = model_card(weights, cfg, data, report_dir)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path
