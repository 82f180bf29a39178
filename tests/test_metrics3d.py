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


def test_best_turn_recovers_a_turned_asset():
    truth = _disc_masks(8)
    turned = truth.roll(3, 0)  # asset view i shows the truth's view i - 3
    shift, scores = M3.best_turn(turned, truth)
    assert shift == 3 and scores[3] == 1.0 and scores[0] < 1.0
    assert M3.turn_degrees(3, 8) == 135.0 and M3.turn_degrees(6, 8) == -90.0


def test_best_turn_tells_symmetric_silhouettes_apart_by_colour():
    """Every turn of a disc fits its silhouette; the colours say which turn it is."""
    mask = torch.zeros(4, 8, 8)
    mask[:, 2:6, 2:6] = 1
    rgb = torch.zeros(4, 3, 8, 8)
    for v in range(4):
        rgb[v, v % 3, 2:6, 2:6] = 0.2 + 0.2 * v  # a colour per view
    shift, scores = M3.best_turn(mask, mask, rgb.roll(1, 0), rgb)
    assert torch.all(scores == 1.0) and shift == 1


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
    # an empty asset shows the black backdrop: its errors are black's, never NaN
    black = torch.zeros_like(rgb)
    empty = M3.colour_errors(black, torch.zeros(2, 8, 8), rgb, mask)
    by_hand = (M3.srgb_to_lab(rgb) - M3.srgb_to_lab(black)).norm(dim=1).mean().item()
    assert empty["delta_e_pixel"] == pytest.approx(by_hand, rel=1e-5)
    assert empty["chroma"] == 0.0 and empty["pattern_contrast"] == 0.0


def test_clipped_fraction_counts_foreground_only():
    rgb = torch.full((1, 3, 2, 2), 0.5)
    rgb[0, 0, 0, 0] = 1.0  # clipped, foreground
    rgb[0, :, 1, 1] = 0.0  # clipped, background
    mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    assert M3.clipped_fraction_fg(rgb, mask) == pytest.approx(1 / 3)
    assert M3.clipped_fraction_fg(rgb, torch.zeros(1, 2, 2)) == 1.0  # empty: only backdrop


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
    assert abs(M3.chamfer_distance(p, q, empty=2.0) - expected) < 1e-6
    assert M3.chamfer_distance(torch.zeros(0, 3), q, empty=2.0) == 2.0


def test_janus_rate_counts_non_front_cameras_called_front():
    true = torch.tensor([1, 0, 2, 0, 1])  # front, side, back, side, front
    pred = torch.tensor([1, 1, 1, 0, 1])  # the side at index 1 and the back are called front
    s = M3.janus_scores(pred, true, front=1)
    assert s["view_accuracy"] == pytest.approx(3 / 5) and abs(s["janus_rate"] - 2 / 3) < 1e-6


def test_detail_ratio_of_the_truth_is_one_and_blur_and_faintness_lower_it():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    assert abs(M3.detail_ratio(x, x) - 1.0) < 1e-6
    blur = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    assert M3.detail_ratio(blur, x) < 0.5
    faint = x * 0.3  # power scales with the square of the contrast
    assert M3.detail_ratio(faint, x) == pytest.approx(0.09, rel=1e-4)
    # measured at the prior's 32 px: a 64 px render is averaged down first
    big = x.repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert abs(M3.detail_ratio(big, x) - 1.0) < 1e-5


def _disc(size: int = 64, holes: bool = False) -> torch.Tensor:
    """(1, 3, size, size): a disc on the black backdrop in a 4-px red/white checkerboard (at 32
    px), optionally with a grid of 4 px holes punched through it."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2).float()
    if holes:
        disc = disc * ~((yy // 8 % 2 == 0) & (xx // 8 % 2 == 0))
    return disc.expand(1, 3, size, size).clone()


def test_interior_detail_counts_the_pattern_inside_and_not_the_outline():
    d = 64 // 32 * 4  # a check is 4 px at the prior's 32 px
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    checks = ((yy // d + xx // d) % 2).float()
    red = torch.tensor([0.8, 0.1, 0.1])[:, None, None]
    truth = _disc() * (checks * 0.9 + (1 - checks) * red)  # red and white checks
    assert M3.interior_detail(truth, truth) == pytest.approx(1.0, abs=1e-6)
    flat = _disc() * truth[0].sum((1, 2), keepdim=True) / _disc()[0].sum((1, 2), keepdim=True)
    assert M3.interior_detail(flat, truth) < 0.01  # the same outline, no pattern
    # a flat asset broken into fragments: many edges, none of them inside the object
    broken = _disc(holes=True) * flat.amax((2, 3), keepdim=True)
    assert M3.interior_detail(broken, truth) < 0.01
    assert M3.detail_ratio(broken, truth) > 0.2  # the whole-image spectrum counts the holes
    blurred = torch.nn.functional.avg_pool2d(truth, 3, 1, 1)
    assert M3.interior_detail(flat, truth) < M3.interior_detail(blurred, truth) < 0.7
    faint = truth * 0.5 + _disc() * 0.2  # half the contrast, still lit: a quarter the energy
    assert M3.interior_detail(faint, truth) == pytest.approx(0.25, rel=1e-2)
    assert M3.interior_detail(torch.zeros_like(truth), truth) == 0.0  # nothing shown


def test_march_opacity_and_depth_through_a_slab_by_hand():
    """A slab |x| < 0.25 of density 4 in a grid over [-1, 1]^3: a ray along x has opacity
    1 - exp(-4 * 0.5), reaches 0.5 at x = -0.25 + ln 2 / 4, and its largest density is 4."""
    res, radius = 64, 1.0
    from lmcsds.evaluation.asset_density import grid_points

    p = grid_points(res, radius)
    field = torch.where(p[:, 0].abs() < 0.25, 4.0, 0.0).reshape(res, res, res)
    o = torch.tensor([[-3.0, 0.01, 0.01]])
    d = torch.tensor([[1.0, 0.0, 0.0]])
    out = M3.march(field, radius, o, d, samples=512)
    assert out["opacity"].item() == pytest.approx(1 - math.exp(-2.0), abs=0.02)
    assert out["depth"].item() == pytest.approx(3.0 - 0.25 + math.log(2) / 4, abs=0.02)
    assert out["max_density"].item() == pytest.approx(4.0, abs=1e-4)
    miss = M3.march(field * 0.1, radius, o, d)  # opacity 1 - exp(-0.2) < 0.5: never reached
    assert torch.isinf(miss["depth"]).all()


def test_occupancy_level_follows_the_asset_silhouettes():
    """Rays whose largest density exceeds the level see the level set; the level that best
    matches the rendered mask is chosen, whatever the density's scale; empty: inf."""
    max_density = torch.tensor([0.0, 0.5, 3.0, 3.5, 4.0, 0.2])
    mask = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    level = M3.occupancy_level(max_density, mask)
    assert 0.5 <= level < 3.0
    assert M3.occupancy_level(max_density * 100, mask) == pytest.approx(level * 100, rel=1e-5)
    assert M3.occupancy_level(max_density, torch.zeros(6)) == float("inf")


def test_part_recall_by_hand():
    occupied = torch.zeros(8, 8, 8, dtype=torch.bool)
    occupied[:4] = True
    a = torch.zeros(8, 8, 8, dtype=torch.bool)
    b = torch.zeros(8, 8, 8, dtype=torch.bool)
    a[1:3, 2:4, 2:4] = True  # inside the occupied half
    b[6:8, 2:4, 2:4] = True  # two cells or more away from it: missed even with dilation
    r = M3.part_recall(occupied, {"a": a, "b": b})
    assert r["recall_a"] == 1.0 and r["recall_b"] == 0.0
    assert r["part_recall"] == 0.5 and r["parts_found"] == 0.5
    b[4] = b[6]  # one cell from the occupied half: recalled through the one-cell tolerance
    assert M3.part_recall(occupied, {"b": b})["recall_b"] == pytest.approx(1 / 3)


def test_bench_runs_per_seed():
    """--seeds: every guidance (the ceiling and fixed eps included) over the same seeds."""
    from lmcsds.evaluation.bench3d import DEFAULT_GUIDANCES, FIXED_EPS, SUPERVISED, guidance_runs
    from lmcsds.evaluation.bench3d.runs import parse_seeds

    guidance = {"pretrained_model_name_or_path": "p", "loss_type": "lmc-sds"}
    one, three = guidance_runs(guidance), guidance_runs(guidance, parse_seeds("3"))
    assert len(one) == 22 and {r.seed for r in one} == {0}
    assert one[0].spec.label == SUPERVISED and FIXED_EPS in {r.spec.label for r in one}
    # a plain run: the ceiling first, every label a real run, NFSD and CSD only on request
    assert DEFAULT_GUIDANCES[0] == SUPERVISED and len(set(DEFAULT_GUIDANCES)) == 10
    assert set(DEFAULT_GUIDANCES) < {r.spec.label for r in one}
    assert not any(g.startswith(("nfsd", "csd")) for g in DEFAULT_GUIDANCES)
    assert len(three) == 22 * 3
    # --guidances remedies: each base with each remedy, and only the remedy differs
    from lmcsds.evaluation.bench3d.runs import REMEDY_GUIDANCES

    specs = {r.spec.label: r.spec.guidance for r in one}
    assert set(REMEDY_GUIDANCES) <= set(specs) and len(REMEDY_GUIDANCES) == 11
    for base in ("sds-w21", "lmc-sds-w10"):
        for remedy, changed in (("linear", {"time_schedule": "linear"}),
                                ("dreamtime", {"time_schedule": "dreamtime"}),
                                ("sdi", {"time_schedule": "linear", "noise": "inversion"}),
                                ("cap800", {"max_step_percent": [0, 0.98, 0.8, 100]})):  # fmt: skip
            variant = specs[f"{base}-{remedy}"]
            assert {k: v for k, v in variant.items() if specs[base].get(k) != v
                    and not k.startswith("inversion_")} == changed  # fmt: skip
    # the paper's raw corrective input beside the default (clamped, from the base config)
    raw = {k: v for k, v in specs["lmc-sds-w10-raw"].items() if specs["lmc-sds-w10"].get(k) != v}
    assert raw == {"corrective_input": "raw"}
    assert sorted(r.name for r in three if r.spec.label == "lmc-sds-w10") == [
        "lmc-sds-w10-s0", "lmc-sds-w10-s1", "lmc-sds-w10-s2"]  # fmt: skip
    assert [r.seed for r in guidance_runs(guidance, parse_seeds("5,9"))][:2] == [5, 9]
    assert parse_seeds("0,") == [0]  # seed 0 alone, as the count error suggests
    for bad in ("0", "1,1", "x", "-1,2"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    with pytest.raises(ValueError, match="--seeds 0,"):
        parse_seeds("0")


def test_bench_queue_is_seed_major_and_scores_only_complete_cells(tmp_path):
    """Interrupted, the benchmark has trained whole seeds; only (prompt, seed) cells in which
    every guidance finished are scored, so guidances are compared on the same runs."""
    from lmcsds.evaluation.bench3d import guidance_runs
    from lmcsds.evaluation.bench3d.bench import complete_cells, training_queue
    from lmcsds.evaluation.bench3d.runs import slug
    from lmcsds.priors.objects3d import ObjectSpec

    guidance = {"pretrained_model_name_or_path": "p", "loss_type": "lmc-sds"}
    runs = [r for r in guidance_runs(guidance, [0, 3]) if r.spec.label in ("supervised", "sds-w21")]
    mug, cube = ObjectSpec("mug", "red", "checkered"), ObjectSpec("cube", "blue", "plain")

    def finish(spec, name, step):
        ckpt = tmp_path / "runs" / slug(spec) / name / "ckpts" / "last.ckpt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"global_step": step}, ckpt)

    finish(mug, "supervised-s0", 8)
    finish(mug, "sds-w21-s0", 8)
    finish(cube, "supervised-s0", 8)
    finish(cube, "sds-w21-s0", 5)  # interrupted
    finish(cube, "supervised-s3", 8)
    # a run known by its record alone (its checkpoint not kept) is finished at its own steps
    record = tmp_path / "runs" / slug(mug) / "supervised-s3" / "scores.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"steps": 8, "iou": 0.5}')
    queue = [(slug(s), r.name) for s, r in training_queue(tmp_path, [mug, cube], runs, [0, 3], 8)]
    assert queue == [("blue-cube", "sds-w21-s0"), ("red-checkered-mug", "sds-w21-s3"),
                     ("blue-cube", "sds-w21-s3")]  # fmt: skip
    assert ("red-checkered-mug", "supervised-s3") in [
        (slug(s), r.name) for s, r in training_queue(tmp_path, [mug, cube], runs, [0, 3], 9)]  # fmt: skip
    assert len(training_queue(tmp_path, [mug, cube], runs, [0, 3], 8, force=True)) == 8
    assert complete_cells(tmp_path, [mug, cube], runs, 8) == {("red-checkered-mug", 0)}
    assert complete_cells(tmp_path, [mug, cube], runs, 5) == {("red-checkered-mug", 0),
                                                                ("blue-cube", 0)}  # fmt: skip


def test_bench_baseline_runs_use_their_published_settings(tmp_path):
    """NFSD at omega 7.5 with its negative prompt; CSD's negative weight annealed over the
    first half of the run; Perp-Neg switched on in the prompt processor of its run only."""
    from omegaconf import OmegaConf

    from lmcsds.core.gradients import NFSD_NEGATIVE_PROMPT
    from lmcsds.evaluation.bench3d import guidance_runs
    from lmcsds.evaluation.compare import write_config

    guidance = {"pretrained_model_name_or_path": "p", "loss_type": "lmc-sds"}
    specs = {r.spec.label: r.spec for r in guidance_runs(guidance, steps=400)}
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


def test_non_finite_steps_counts_each_skipped_step_once(tmp_path):
    """``train/skipped_steps`` is a running count that Lightning's CSV log repeats on later
    rows (as in a real run that emptied its scene at step 243 and skipped 7 steps in all): a
    step counts where the count grows, or where loss_sds or a render is not finite."""
    from lmcsds.evaluation.bench3d.scoring import non_finite_steps

    log = tmp_path / "csv_logs" / "version_0" / "metrics.csv"
    log.parent.mkdir(parents=True)
    rows = [  # step, loss_sds, non-finite renders, skipped_steps
        (0, "1.5", "0.0", ""), (1, "2.0", "0.0", ""), (2, "3.0", "0.0", "1.0"),
        (3, "1.0", "0.0", "1.0"), (4, "0.5", "0.0", "2.0"), (5, "0.7", "0.0", "2.0"),
        (6, "nan", "0.0", "3.0"), (7, "0.2", "1.0", "3.0"), (8, "0.1", "0.0", "3.0"),
    ]  # fmt: skip
    text = ["lr,step,train/loss_sds,train/non_finite_renders,train/skipped_steps"]
    for step, loss, renders, skipped in rows:  # Lightning writes the lr on rows of its own
        text += [f"0.01,{step},,,", f",{step},{loss},{renders},{skipped}"]
    log.write_text("\n".join(text) + "\n")
    assert non_finite_steps(tmp_path) == 4  # steps 2, 4, 6 (NaN and skipped: once) and 7


def test_the_mesh_stage_of_an_asset_without_surface_is_its_empty_record(tmp_path):
    """bench3d --refine: a coarse asset covering no pixel has no surface to convert, so its
    mesh stage's record is the coarse one at the mesh stage's steps (its cell stays complete);
    a coarse asset with a surface is refused (it must be refined)."""
    import json

    from lmcsds.evaluation.bench3d.records import copy_empty_record, run_finished

    coarse, fine = tmp_path / "lmc-sds-w10-s0", tmp_path / "lmc-sds-w10-refine-s0"
    coarse.mkdir()
    (coarse / "views.png").write_bytes(b"png")
    row = {"iou": 0.0, "empty": 1.0, "occupancy_level": float("inf"), "steps": 1600, "wall_s": 9.0}
    (coarse / "scores.json").write_text(json.dumps(row))
    out = copy_empty_record(coarse, fine, 400)
    assert out["iou"] == 0.0 and out["steps"] == 400 and out["wall_s"] == 0.0
    assert (fine / "views.png").read_bytes() == b"png" and run_finished(fine, 400)
    (coarse / "scores.json").write_text(json.dumps(dict(row, occupancy_level=4.2, empty=1.0)))
    with pytest.raises(ValueError, match="refine it"):
        copy_empty_record(coarse, tmp_path / "other", 400)
