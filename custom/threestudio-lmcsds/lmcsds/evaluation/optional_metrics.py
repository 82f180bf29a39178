"""Optional metrics for natural-image priors (DeepFloyd IF on a GPU): CLIP score and
R-precision (open_clip ViT-B/16) and LPIPS (AlexNet). They are used when the package and its
weights are present locally; otherwise a message says what is missing and they are skipped.
Nothing is downloaded.
"""

import os
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def clip_scorer(weights: Optional[str] = None) -> Optional[Callable[[Tensor, List[str]], dict]]:
    """CLIP ViT-B/16 score and R-precision from local weights (``--clip-weights`` or
    ``LMCSDS_CLIP_WEIGHTS``), or None with a message."""
    weights = weights or os.environ.get("LMCSDS_CLIP_WEIGHTS")
    try:
        import open_clip
    except ImportError:
        print("CLIP metrics skipped: `pip install open_clip_torch` and pass --clip-weights")
        return None
    if not weights or not os.path.exists(weights):
        print(
            f"CLIP metrics skipped: ViT-B/16 weights not found ({weights or 'no path given'}); "
            f"pass --clip-weights /path/to/open_clip_pytorch_model.bin"
        )
        return None
    model, _, _ = open_clip.create_model_and_transforms("ViT-B-16", pretrained=weights)
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    model.eval()
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

    @torch.no_grad()
    def score(images: Tensor, prompts: List[str]) -> dict:
        """images (N, 3, H, W) in [-1, 1]; prompts[i] is the target of image i."""
        x = F.interpolate(images.float() * 0.5 + 0.5, 224, mode="bicubic", antialias=True)
        img = F.normalize(model.encode_image((x - mean) / std), dim=-1)
        names = sorted(set(prompts))
        txt = F.normalize(model.encode_text(tokenizer(names)), dim=-1)
        sims = img @ txt.T
        target = torch.tensor([names.index(p) for p in prompts])
        return {
            "clip_score": (100 * sims.gather(1, target[:, None])).mean().item(),
            "clip_r_precision": (sims.argmax(1) == target).float().mean().item(),
        }

    return score


def lpips_distance() -> Optional[Callable[[Tensor, Tensor], Tensor]]:
    """LPIPS (AlexNet) if the ``lpips`` package finds its weights locally, or None with a message."""
    try:
        import lpips

        model = lpips.LPIPS(net="alex", verbose=False).eval()
    except Exception as e:  # ImportError, or a failed download of the AlexNet backbone
        print(
            f"LPIPS skipped: the lpips package or its AlexNet weights are not available ({type(e).__name__})"
        )
        return None
    return lambda a, b: model(a.float(), b.float()).flatten()
