"""Figure of the timestep schedules (docs/detail-3d.md): t per training step under IF stage I's
noise schedule for linear annealing and DreamTime with and without W_d, and DreamTime's p(t).

    python scripts/plot_timesteps.py docs/results/detail-3d/timesteps.png [steps]
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from diffusers import DDPMScheduler  # noqa: E402

from lmcsds.core.timesteps import dreamtime_pdf, dreamtime_t, linear_t  # noqa: E402


def main(path: str, steps: int = 1600, t_min: int = 20, t_max: int = 980) -> None:
    abar = DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod  # IF stage I's
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    i = list(range(steps + 1))
    left.plot(i, [linear_t(k / steps, t_min, t_max) for k in i], "C0",
              label="linear (SDI's t_anneal)")  # fmt: skip
    for diffusion, label, colour in ((True, "DreamTime, W_d W_p", "C1"),
                                     (False, "DreamTime, W_p alone", "C2")):  # fmt: skip
        pdf = dreamtime_pdf(abar, t_min, t_max, diffusion_weight=diffusion)
        left.plot(i, [dreamtime_t(pdf, k / steps) for k in i], colour, label=label)
        right.plot(pdf.numpy(), colour, label=label)
    left.axhspan(t_min, t_max, color="0.93", zorder=0, label="uniform: any t in the band")
    left.set(xlabel="training step", ylabel="t", title=f"t per step ({steps} steps)")
    right.set(xlabel="t", ylabel="p(t)", title="DreamTime's p(t), IF's noise schedule")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
