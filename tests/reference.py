"""LMC-SDS written out by hand from METHOD.md, independent of lmcsds.core.gradients."""

import torch


def unet_eps(prior, zt, t, emb):
    """Reference noise prediction: the raw diffusers UNet, one row set at a time."""
    with torch.no_grad():
        return prior.unet(zt, t, encoder_hidden_states=emb).sample[:, :3]


class CountingUNet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet, self.rows = unet, []

    def forward(self, x, t, encoder_hidden_states):
        self.rows.append(x.shape[0])
        return self.unet(x, t, encoder_hidden_states=encoder_hidden_states)


def reference(prior, corrective, z, t, emb_y, emb_0, eps, omega, eps_c=None, mode="global"):
    """LMC-SDS written out from METHOD.md, independent of lmcsds.core.gradients."""
    a = prior.scheduler.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    eps_c = eps if eps_c is None else eps_c
    zt_c = prior.scheduler.add_noise(z, eps_c, t)
    zt = prior.scheduler.add_noise(z, eps, t)
    cond = omega * (unet_eps(prior, zt_c, t, emb_y) - unet_eps(prior, zt_c, t, emb_0))
    e0 = unet_eps(prior, zt, t, emb_0)
    zhat = (zt - (1 - a) ** 0.5 * e0) / a**0.5
    with torch.no_grad():
        b = corrective(z, t)
    stats, below = (mode.split("<")[0], int(mode.split("<")[1])) if "<" in mode else (mode, 10**9)
    dims = (1, 2, 3) if stats == "global" else (2, 3)
    mb, sb = b.mean(dims, keepdim=True), b.std(dims, keepdim=True, unbiased=False)
    sz = zhat.std(dims, keepdim=True, unbiased=False)
    bh = sz / sb * (b - mb) + mb
    if stats == "none":
        bh = b
    bh = torch.stack([bh[i] if t[i] < below else b[i] for i in range(len(t))])  # "global<T"
    return (cond + bh - zhat) / omega
