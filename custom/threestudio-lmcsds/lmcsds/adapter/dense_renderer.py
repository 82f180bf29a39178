"""A pure-PyTorch NeRF volume renderer: dense stratified samples, any torch device.

threestudio's ``nerf-volume-renderer`` samples with nerfacc's CUDA kernels (occupancy grid,
packed rays). This renderer evaluates the same geometry, material and background on
``num_samples_per_ray`` stratified samples per ray between the ray's entry into and exit from
the bounding sphere of radius ``radius`` (the part in front of the camera), and returns the
same outputs, in the same packed layout (one row per sample, ``ray_indices`` naming its ray),
so ``dreamfusion-system``'s orientation, sparsity, opacity and z-variance losses read it
unchanged. With ``grid_prune`` it skips empty space as threestudio's renderer does by default:
nerfacc's ``OccGridEstimator`` (its pure-torch update: 32^3 cells, density x step size against
0.01, EMA every 16 steps) marks the occupied cells, and only samples inside them are evaluated
(the others count as density 0). It exists for CPU runs and as a reference.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import threestudio
import torch
import torch.nn.functional as F
from threestudio.models.renderers.base import VolumeRenderer
from threestudio.utils.ops import chunk_batch
from torch import Tensor


def sphere_bounds(
    rays_o: Tensor, rays_d: Tensor, radius: float, near_plane: float = 0.0
) -> Tuple[Tensor, Tensor]:
    """Distances (N, 1) where rays enter and leave the sphere |x| <= radius, clipped to
    ``near_plane``; rays that miss it get near = far (an empty interval)."""
    d_norm2 = (rays_d * rays_d).sum(-1, keepdim=True)
    t_mid = -(rays_o * rays_d).sum(-1, keepdim=True) / d_norm2  # closest point to the centre
    dist2 = (rays_o + t_mid * rays_d).pow(2).sum(-1, keepdim=True)
    half = ((radius**2 - dist2).clamp_min(0.0) / d_norm2).sqrt()
    near = (t_mid - half).clamp_min(near_plane)
    far = (t_mid + half).clamp_min(near_plane)
    return near, far


def stratified_intervals(
    near: Tensor, far: Tensor, num_samples: int, randomized: bool
) -> Tuple[Tensor, Tensor]:
    """(N, S) interval starts and ends tiling [near, far] in S equal bins; when randomized
    the inner bin edges move by one uniform offset of up to half a bin per ray (stratified)."""
    steps = torch.arange(num_samples + 1, device=near.device, dtype=near.dtype)
    shift = torch.rand_like(near) - 0.5 if randomized else torch.zeros_like(near)
    frac = (steps + shift) / num_samples
    frac[:, 0], frac[:, -1] = 0.0, 1.0
    edges = near + (far - near) * frac
    return edges[:, :-1], edges[:, 1:]


def render_weights(density: Tensor, deltas: Tensor) -> Tuple[Tensor, Tensor]:
    """Volume rendering weights (N, S): alpha_i = 1 - exp(-sigma_i delta_i),
    T_i = prod_{j<i} (1 - alpha_j), w_i = T_i alpha_i; also returns T."""
    alpha = 1.0 - torch.exp(-density * deltas)
    trans = torch.exp(-torch.cumsum(density * deltas, dim=-1))
    trans = torch.cat([torch.ones_like(trans[:, :1]), trans[:, :-1]], dim=-1)  # exclusive
    return trans * alpha, trans


@threestudio.register("lmcsds-dense-volume-renderer")
class DenseVolumeRenderer(VolumeRenderer):
    @dataclass
    class Config(VolumeRenderer.Config):
        num_samples_per_ray: int = 64
        randomized: bool = True
        eval_chunk_size: int = 160000
        near_plane: float = 0.0
        return_comp_normal: bool = False
        return_normal_perturb: bool = False
        # skip samples in empty cells of an occupancy grid (threestudio's nerf-volume-renderer
        # default, grid_prune: true); the grid updates as there, every 16 steps
        grid_prune: bool = False
        grid_resolution: int = 32

    cfg: Config

    def configure(self, geometry, material, background) -> None:
        super().configure(geometry, material, background)
        self.randomized = self.cfg.randomized
        if self.cfg.grid_prune:
            import nerfacc

            r = self.cfg.radius
            self.estimator = nerfacc.OccGridEstimator(
                roi_aabb=[-r, -r, -r, r, r, r], resolution=self.cfg.grid_resolution, levels=1
            )
            # threestudio's step size for the occupancy test (density * step ~ alpha)
            self.render_step_size = 1.732 * 2 * r / self.cfg.num_samples_per_ray

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        if self.cfg.grid_prune and self.training and not on_load_weights:

            def occ_eval_fn(x: Tensor) -> Tensor:
                return self.geometry.forward_density(x) * self.render_step_size

            self.estimator.update_every_n_steps(step=global_step, occ_eval_fn=occ_eval_fn)

    def occupied(self, positions: Tensor) -> Tensor:
        """(N,) True for samples to evaluate: inside an occupied grid cell (all without
        ``grid_prune``)."""
        if not self.cfg.grid_prune:
            return torch.ones(len(positions), dtype=torch.bool, device=positions.device)
        r, res = self.cfg.radius, self.cfg.grid_resolution
        cell = ((positions + r) / (2 * r) * res).floor().long()
        inside = ((cell >= 0) & (cell < res)).all(-1)
        cell = cell.clamp(0, res - 1)
        binaries = self.estimator.binaries[0]
        return inside & binaries[cell[:, 0], cell[:, 1], cell[:, 2]]

    def forward(
        self,
        rays_o: Tensor,
        rays_d: Tensor,
        light_positions: Tensor,
        bg_color: Optional[Tensor] = None,
        **kwargs,
    ) -> Dict[str, Tensor]:
        batch_size, height, width = rays_o.shape[:3]
        n_rays, n_samples = batch_size * height * width, self.cfg.num_samples_per_ray
        origins, dirs = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
        lights = light_positions.reshape(-1, 1, 1, 3).expand(-1, height, width, -1).reshape(-1, 3)

        near, far = sphere_bounds(origins, dirs, self.cfg.radius, self.cfg.near_plane)
        t_starts, t_ends = stratified_intervals(near, far, n_samples, self.randomized)
        ray_indices = torch.arange(n_rays, device=origins.device).repeat_interleave(n_samples)
        t_points = ((t_starts + t_ends) / 2).reshape(-1, 1)
        t_intervals = (t_ends - t_starts).reshape(-1, 1)
        keep = self.occupied(origins[ray_indices] + dirs[ray_indices] * t_points).nonzero()[:, 0]
        every = len(keep) == n_rays * n_samples
        ray_indices, t_points, t_intervals = ray_indices[keep], t_points[keep], t_intervals[keep]
        t_dirs, t_lights = dirs[ray_indices], lights[ray_indices]
        positions = origins[ray_indices] + t_dirs * t_points

        need_normal = self.material.requires_normal
        if self.training:
            geo_out = self.geometry(positions, output_normal=need_normal)
            rgb_fg_all = self.material(
                viewdirs=t_dirs, positions=positions, light_positions=t_lights, **geo_out, **kwargs
            )
            comp_rgb_bg = self.background(dirs=rays_d)
        else:
            chunk = self.cfg.eval_chunk_size
            geo_out = chunk_batch(self.geometry, chunk, positions, output_normal=need_normal)
            rgb_fg_all = chunk_batch(
                self.material,
                chunk,
                viewdirs=t_dirs,
                positions=positions,
                light_positions=t_lights,
                **geo_out,
            )
            comp_rgb_bg = chunk_batch(self.background, chunk, dirs=rays_d)

        # the rays' samples as a dense (rays, samples) grid, skipped ones at density 0
        density = geo_out["density"].reshape(-1)
        deltas = t_intervals.reshape(-1)
        if not every:
            density = density.new_zeros(n_rays * n_samples).index_copy(0, keep, density)
            deltas = deltas.new_zeros(n_rays * n_samples).index_copy(0, keep, deltas)
        weights_2d, _ = render_weights(
            density.reshape(n_rays, n_samples), deltas.reshape(n_rays, n_samples)
        )
        weights = weights_2d.reshape(-1, 1)
        if not every:
            weights = weights[keep]

        def along_rays(values: Tensor, w: Tensor = weights) -> Tensor:
            if every:
                return (w * values).reshape(n_rays, n_samples, -1).sum(1)
            out = values.new_zeros(n_rays, values.shape[-1])
            return out.index_add(0, ray_indices, w * values)

        opacity = weights_2d.sum(-1, keepdim=True)
        depth = along_rays(t_points)
        comp_rgb_fg = along_rays(rgb_fg_all)
        weights_normalized = weights / opacity.clamp(min=1e-5)[ray_indices]
        z_mean = along_rays(t_points, weights_normalized)
        z_variance = along_rays((t_points - z_mean[ray_indices]) ** 2, weights_normalized)
        z_variance = z_variance * (opacity > 0.5).float()

        if bg_color is None:
            bg_color = comp_rgb_bg
        elif bg_color.shape[:-1] == (batch_size,):  # one colour per image
            bg_color = bg_color[:, None, None].expand(-1, height, width, -1)
        if bg_color.shape[:-1] == (batch_size, height, width):
            bg_color = bg_color.reshape(n_rays, -1)
        comp_rgb = comp_rgb_fg + bg_color * (1.0 - opacity)

        def image(x: Tensor) -> Tensor:
            return x.view(batch_size, height, width, -1)

        out = {
            "comp_rgb": image(comp_rgb),
            "comp_rgb_fg": image(comp_rgb_fg),
            "comp_rgb_bg": image(comp_rgb_bg),
            "opacity": image(opacity),
            "depth": image(depth),
            "z_variance": image(z_variance),
        }
        if "normal" in geo_out and (not self.training or self.cfg.return_comp_normal):
            comp_normal = F.normalize(along_rays(geo_out["normal"]), dim=-1)
            out["comp_normal"] = image((comp_normal + 1.0) / 2.0 * opacity)  # for display
        if self.training:
            out.update(
                weights=weights,
                t_points=t_points,
                t_intervals=t_intervals,
                t_dirs=t_dirs,
                ray_indices=ray_indices,
                points=positions,
                **geo_out,
            )
            if "normal" in geo_out and self.cfg.return_normal_perturb:
                jitter = positions + torch.randn_like(positions) * 1e-2
                out["normal_perturb"] = self.geometry(jitter, output_normal=need_normal)["normal"]
        return out

    def train(self, mode: bool = True):
        self.randomized = mode and self.cfg.randomized
        return super().train(mode=mode)

    def eval(self):
        self.randomized = False
        return super().eval()
