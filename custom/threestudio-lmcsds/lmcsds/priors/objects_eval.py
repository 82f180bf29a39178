"""The procedural-object prior's own samples: prompt faithfulness by the object classifier and
a sample grid per prompt and view.

    python -m lmcsds.priors.objects_eval --prior load/lmcsds/priors/objects-if-32
"""

import argparse
import json
from pathlib import Path
from typing import List

import torch
from torch import Tensor
from tqdm import tqdm

from ..commands import module_main
from .cameras import VIEWS, with_view
from .objects3d import ASYMMETRIC, ObjectSpec
from .objects_classifier import load_object_classifier, predict
from .objects_data import HELD_OUT, training_specs

SAMPLE_VIEWS = ["side", "front", "back"]  # overhead never occurs under the CPU config's cameras


@torch.no_grad()
def sample(
    prior_dir: str,
    prompts: List[str],
    guidance_scale: float = 4.0,
    steps: int = 50,
    seed: int = 0,
    batch: int = 64,
) -> Tensor:
    """One sample per prompt from the prior's IF sampler (DDPM, classifier-free guidance in the
    paper's convention), (len(prompts), 3, H, W) in [-1, 1]."""
    from diffusers import IFPipeline

    from ..core.text import encode_prompts

    pipe = IFPipeline.from_pretrained(
        prior_dir, text_encoder=None, safety_checker=None, watermarker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    emb = encode_prompts(prior_dir, list(prompts) + [""])
    out = []
    for i in tqdm(range(0, len(prompts), batch), desc="prior samples", unit="batch"):
        e = emb[i : min(i + batch, len(prompts))]
        out.append(
            pipe(
                prompt_embeds=e, negative_prompt_embeds=emb[-1:].expand(len(e), -1, -1),
                num_inference_steps=steps, guidance_scale=guidance_scale, output_type="pt",
                generator=torch.Generator().manual_seed(seed + i),
            ).images.clamp(-1, 1)  # fmt: skip
        )
    return torch.cat(out)


def faithfulness(
    prior_dir: str, classifier: str, specs: List[ObjectSpec], samples_per_view: int = 1, **kw
) -> dict:
    """Per caption: samples (with each of ``SAMPLE_VIEWS``' suffixes) whose predicted shape and
    colour are the prompted ones; a caption passes when more than half its samples do.
    The view accuracy counts the asymmetric shapes only."""
    rows = [(s, v) for s in specs for v in SAMPLE_VIEWS for _ in range(samples_per_view)]
    prompts = [with_view(s.caption(), VIEWS.index(v)) for s, v in rows]
    images = sample(prior_dir, prompts, **kw)
    pred = predict(load_object_classifier(classifier), images)
    per_caption = {}
    for i, (spec, view) in enumerate(rows):
        shape, colour, pattern = spec.labels
        entry = per_caption.setdefault(spec.caption(), {"n": 0, "shape_colour": 0, "pattern": 0})
        entry["n"] += 1
        entry["shape_colour"] += int(pred["shape"][i] == shape and pred["colour"][i] == colour)
        entry["pattern"] += int(pred["pattern"][i] == pattern)
        if spec.shape in ASYMMETRIC:
            entry.setdefault("view", 0)
            entry["view"] += int(pred["view"][i] == VIEWS.index(view))
    n = len(rows)
    asym = [i for i, (s, _) in enumerate(rows) if s.shape in ASYMMETRIC]
    return {
        "captions": len(per_caption),
        "captions_passing": sum(e["shape_colour"] * 2 > e["n"] for e in per_caption.values())
        / len(per_caption),
        "sample_shape_colour": sum(e["shape_colour"] for e in per_caption.values()) / n,
        "sample_pattern": sum(e["pattern"] for e in per_caption.values()) / n,
        "sample_view_asymmetric": sum(e.get("view", 0) for e in per_caption.values())
        / max(1, len(asym)),
        "per_caption": per_caption,
        "images": images,
    }


def grid_specs() -> List[ObjectSpec]:
    """One row per shape x pattern, colours cycling: 24 captions, all seen in training."""
    seen = set(training_specs())
    colours = ["red", "orange", "yellow", "green", "blue", "purple"]
    rows = []
    for i, spec in enumerate(ObjectSpec(s, "red", p) for s in
                             ["sphere", "cube", "cylinder", "cone", "torus", "mug", "chair", "snowman"]
                             for p in ["plain", "striped", "checkered"]):  # fmt: skip
        for k in range(len(colours)):
            candidate = ObjectSpec(spec.shape, colours[(i + k) % len(colours)], spec.pattern)
            if candidate in seen:
                rows.append(candidate)
                break
    return rows


def sample_grid(images: Tensor, specs: List[ObjectSpec], per_view: int, out_png: str, title: str):
    """Rows: captions; columns: ``SAMPLE_VIEWS`` x ``per_view`` samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(SAMPLE_VIEWS) * per_view
    fig, axes = plt.subplots(len(specs), cols, figsize=(cols * 0.8 + 2.4, len(specs) * 0.82))
    for i, ax in enumerate(axes.flat):
        ax.imshow((images[i].permute(1, 2, 0).numpy() * 0.5 + 0.5).clip(0, 1))
        ax.set_xticks([]), ax.set_yticks([])
        if i < cols:
            ax.set_title(SAMPLE_VIEWS[i // per_view], fontsize=7)
        if i % cols == 0:
            label = specs[i // cols].caption().replace("a photo of ", "")
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prior", default="load/lmcsds/priors/objects-if-32",
                        help="prior folder (results are written into it)")  # fmt: skip
    parser.add_argument("--classifier", default="load/lmcsds/priors/objects-classifier.safetensors",
                        help="procedural-object classifier")  # fmt: skip
    parser.add_argument("--guidance-scale", type=float, default=4.0, help="sampler's omega")
    parser.add_argument("--steps", type=int, default=50, help="DDPM steps of the sampler")
    parser.add_argument("--samples-per-view", type=int, default=1, help="per caption and view")


def main(argv=None) -> None:
    module_main(__doc__, add_arguments, run, argv)


def run(args: argparse.Namespace) -> None:
    kw = dict(guidance_scale=args.guidance_scale, steps=args.steps)
    out_dir = Path(args.prior)
    result = {"sampler": {**kw, "views": SAMPLE_VIEWS}}
    for name, specs in [("training_captions", training_specs()), ("held_out_captions", HELD_OUT)]:
        r = faithfulness(args.prior, args.classifier, specs, args.samples_per_view, **kw)
        r.pop("images")
        result[name] = r
        print(
            f"{name}: {r['captions_passing']:.1%} of {r['captions']} captions pass; samples: "
            f"shape+colour {r['sample_shape_colour']:.1%}, pattern {r['sample_pattern']:.1%}, "
            f"view (asymmetric) {r['sample_view_asymmetric']:.1%}"
        )
    (out_dir / "faithfulness.json").write_text(json.dumps(result, indent=1))
    for name, specs in [("samples.png", grid_specs()), ("samples-held-out.png", HELD_OUT)]:
        per_view = 2
        prompts = [
            with_view(s.caption(), VIEWS.index(v)) for s in specs for v in SAMPLE_VIEWS
            for _ in range(per_view)
        ]  # fmt: skip
        images = sample(args.prior, prompts, seed=100, **kw)
        title = f"{out_dir.name}: IF sampler, {args.steps} steps, omega {args.guidance_scale:g}" + (
            " (captions never used in training)" if "held" in name else ""
        )
        sample_grid(images, specs, per_view, str(out_dir / name), title)
    print(f"wrote {out_dir / 'faithfulness.json'} and the sample grids")


if __name__ == "__main__":
    main()
