"""3D benchmark scores against hand-computed values."""

import math

import pytest
import torch

from lmcsds.evaluation import metrics3d as M3


def _disc_masks(views: int, size: int = 16) -> torch.Tensor:
    """A square whose position encodes the view index: every view differs."""
    masks = torch.zeros(views, size, size)
    for v in range(views):
        masks[v, v : v + 4, 2:6] = 1
    return masks


def test_silhouette_iou_by_hand():
    a = torch.zeros(1, 4, 4)
    b = torch.zeros(1, 4, 4)
    a[0, :2, :2] = 1  # 4 pixels
    b[0, :2, 1:3] = 1  # 4 pixels, 2 shared
    assert M3.silhouette_iou(a, b).item() == pytest.approx(2 / 6)
    assert M3.silhouette_iou(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4)).item() == 1.0


def test_best_azimuth_shift_recovers_a_turned_asset():
    truth = _disc_masks(8)
    turned = truth.roll(3, 0)  # asset view i shows the truth's view i - 3
    shift, scores = M3.best_azimuth_shift(turned, truth)
    assert shift == 3 and scores[3] == 1.0 and scores[0] < 1.0


def test_lab_of_known_colours():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).T[:, :, None]
    lab = M3.srgb_to_lab(rgb)[:, :, 0].T
    torch.testing.assert_close(lab[0], torch.tensor([100.0, 0.0, 0.0]), atol=0.05, rtol=0)
    torch.testing.assert_close(lab[1], torch.tensor([0.0, 0.0, 0.0]), atol=0.05, rtol=0)
    # sRGB red: L 53.24, a 80.09, b 67.20 (published reference values)
    torch.testing.assert_close(lab[2], torch.tensor([53.24, 80.09, 67.20]), atol=0.1, rtol=0)


def test_colour_errors_zero_for_the_truth_and_grey_has_no_chroma():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, 8, 8, generator=g)
    mask = torch.ones(2, 8, 8)
    same = M3.colour_errors(rgb, mask, rgb, mask)
    assert same["delta_e_pixel"] < 1e-4 and same["delta_e_mean"] < 1e-4
    grey = M3.colour_errors(torch.full((1, 3, 4, 4), 0.5), torch.ones(1, 4, 4), rgb[:1, :, :4, :4],
                            torch.ones(1, 4, 4))  # fmt: skip
    assert grey["chroma"] < 0.05 and grey["chroma_true"] > 5
    empty = M3.colour_errors(rgb, torch.zeros(2, 8, 8), rgb, mask)
    assert math.isnan(empty["delta_e_mean"])


def test_clipped_fraction_counts_foreground_only():
    rgb = torch.full((1, 3, 2, 2), 0.5)
    rgb[0, 0, 0, 0] = 1.0  # clipped, foreground
    rgb[0, :, 1, 1] = 0.0  # clipped, background
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    assert M3.clipped_fraction_fg(rgb, mask) == pytest.approx(1 / 3)


def test_volume_iou_and_chamfer_by_hand():
    a = torch.zeros(4, 4, 4, dtype=torch.bool)
    b = torch.zeros(4, 4, 4, dtype=torch.bool)
    a[:2] = True
    b[1:3] = True
    assert M3.volume_iou(a, b) == 16 / 48
    p = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    q = torch.tensor([[0.0, 0.0, 0.5]])
    # p -> q: 0.5 and sqrt(1.25); q -> p: 0.5
    expected = 0.5 * ((0.5 + math.sqrt(1.25)) / 2 + 0.5)
    assert abs(M3.chamfer_distance(p, q) - expected) < 1e-6


def test_janus_rate_counts_non_front_cameras_called_front():
    true = torch.tensor([1, 0, 2, 0, 1])  # front, side, back, side, front
    pred = torch.tensor([1, 1, 1, 0, 1])  # the side at index 1 and the back are called front
    s = M3.janus_scores(pred, true, front=1)
    assert s["view_accuracy"] == pytest.approx(3 / 5) and abs(s["janus_rate"] - 2 / 3) < 1e-6


def test_detail_ratio_of_the_truth_is_one_and_blur_lowers_it():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    assert abs(M3.detail_ratio(x, x) - 1.0) < 1e-6
    blur = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    assert M3.detail_ratio(blur, x) < 0.5


@pytest.mark.threestudio
def test_occupied_density_stops_half_the_light_over_the_thinnest_parts():
    """The volume metrics' occupancy level: a slab of OCCUPIED_LENGTH at that density, rendered
    by the dense renderer's weights, has opacity 0.5 (the silhouettes' threshold)."""
    from lmcsds.adapter.dense_renderer import render_weights
    from lmcsds.evaluation.bench3d import OCCUPIED_DENSITY, OCCUPIED_LENGTH

    samples = 50
    density = torch.full((1, samples), OCCUPIED_DENSITY)
    deltas = torch.full((1, samples), OCCUPIED_LENGTH / samples)
    weights, _ = render_weights(density, deltas)
    assert weights.sum().item() == pytest.approx(0.5, abs=1e-5)
    assert OCCUPIED_DENSITY == pytest.approx(6.93, abs=0.01)  # ln 2 / 0.1


def test_bench_runs_per_seed_count():
    """--seeds N: every non-fixed guidance N times (seeds 0..N-1); fixed eps over its own seeds."""
    from lmcsds.evaluation.bench3d import FIXED_EPS, guidance_runs

    guidance = {"pretrained_model_name_or_path": "p", "loss_type": "lmc-sds"}
    one, three = guidance_runs(guidance, fixed_seeds=2), guidance_runs(guidance, 2, seeds=3)
    others = [r for r in one if r.spec.label != FIXED_EPS]
    assert len(others) == 11 and {r.seed for r in others} == {0}
    assert len(three) == 11 * 3 + 2
    assert sorted(r.name for r in three if r.spec.label == "lmc-sds-w10") == [
        "lmc-sds-w10-s0", "lmc-sds-w10-s1", "lmc-sds-w10-s2"]  # fmt: skip
    assert [r.seed for r in three if r.spec.label == FIXED_EPS] == [0, 1]


def test_bench_baseline_runs_use_their_published_settings(tmp_path):
    """NFSD at omega 7.5 with its negative prompt; CSD's negative weight annealed over the
    first half of the run; Perp-Neg switched on in the prompt processor of its run only."""
    from omegaconf import OmegaConf

    from lmcsds.core.gradients import NFSD_NEGATIVE_PROMPT
    from lmcsds.evaluation.bench3d import guidance_runs
    from lmcsds.evaluation.compare import write_config

    guidance = {"pretrained_model_name_or_path": "p", "loss_type": "lmc-sds"}
    specs = {r.spec.label: r.spec for r in guidance_runs(guidance, 0, steps=400)}
    assert specs["nfsd-w7.5"].guidance["negative_prompt"] == NFSD_NEGATIVE_PROMPT
    assert specs["nfsd-w7.5"].guidance["guidance_scale"] == 7.5
    assert specs["csd-w10"].guidance["csd_negative_weight"] == [0, 0.0, 1.0, 200]
    assert specs["ms-sds-w21"].guidance["ms_sds_steps"] == 5
    base = tmp_path / "base.yaml"
    OmegaConf.save({"system": {"prompt_processor": {"prompt": "x", "use_perp_neg": False},
                               "guidance_type": "g", "guidance": {}}}, base)  # fmt: skip
    perp = OmegaConf.load(write_config(base, specs["lmc-sds-w10-perpneg"], tmp_path / "a.yaml"))
    plain = OmegaConf.load(write_config(base, specs["lmc-sds-w10"], tmp_path / "b.yaml"))
    assert perp.system.prompt_processor.use_perp_neg and perp.system.prompt_processor.prompt == "x"
    assert not plain.system.prompt_processor.use_perp_neg
