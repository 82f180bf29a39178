"""The benchmark's report: the mesh stage's change over its own coarse run, detail read against
the ceiling."""

from pathlib import Path

import pytest

from lmcsds.evaluation.bench3d.report import (
    HEADLINE,
    METRICS,
    stage_gains,
    summarise,
    summary_markdown,
)


def _rows():
    """Two prompts x three seeds; ``a-refine`` is its coarse run ``a`` + 0.1 IoU and - 5 Delta E
    on every prompt and seed; ``b`` has no mesh stage."""
    rows = []
    for p, prompt in enumerate(["mug", "cube"]):
        for seed in range(3):
            base = {k: 0.3 + 0.1 * p + 0.05 * seed for k in METRICS}
            base.update(prompt=prompt, seed=seed, held_out=False, features=[0.0, 1.0])
            rows.append(dict(base, guidance="a"))
            rows.append(dict(base, guidance="b", iou=base["iou"] - 0.2))
            refined = dict(base, guidance="a-refine", iou=base["iou"] + 0.1)
            refined["delta_e_pixel"] = base["delta_e_pixel"] - 5.0
            rows.append(refined)
    return rows


def test_the_mesh_stage_is_paired_with_the_coarse_run_it_was_refined_from():
    (gain,) = stage_gains(_rows())
    assert gain["guidance"] == "a-refine" and gain["pairs"] == 6
    assert gain["iou"] == pytest.approx(0.1) and gain["iou_lo"] == pytest.approx(0.1)
    assert gain["iou_shown"] and gain["delta_e_pixel"] == pytest.approx(-5.0)
    assert gain["chamfer"] == pytest.approx(0.0) and not gain["chamfer_shown"]


def test_the_summary_has_a_mesh_stage_table_only_when_there_is_a_mesh_stage():
    rows = _rows()
    text = summary_markdown(rows, summarise(rows), None, 1600, 24, None)
    section = text.split("## Mesh stage minus its coarse stage")[1]
    (line,) = [row for row in section.splitlines() if row.startswith("| a-refine |")]
    assert "0.100 [0.100, 0.100] *" in line and "-5.000 [-5.000, -5.000] *" in line
    one = [r for r in rows if r["seed"] == 0 and r["prompt"] == "mug"]
    one_text = summary_markdown(one, summarise(one), None, 1600, 24, None)
    assert "0.100 (one run)" in one_text.split("## Mesh stage minus its coarse stage")[1]
    coarse = [r for r in rows if not r["guidance"].endswith("-refine")]
    assert "Mesh stage" not in summary_markdown(coarse, summarise(coarse), None, 1600, 24, None)


def test_the_summary_plot_draws_a_run_without_interval(tmp_path):
    from lmcsds.evaluation.bench3d.report import plot_summary

    one = [r for r in _rows() if r["seed"] == 0 and r["prompt"] == "mug"]
    plot_summary(summarise(one), tmp_path / "summary.png")
    assert (tmp_path / "summary.png").stat().st_size > 0


def test_the_command_file_shows_paths_inside_the_working_folder_relative(tmp_path, monkeypatch):
    """COMMAND.md is for a reader to retype: the output folder and the configs under the
    working folder are written relative to it, a folder outside it stays absolute."""
    from lmcsds.evaluation.bench3d.bench import write_command
    from lmcsds.priors.objects3d import parse_caption

    work, elsewhere = tmp_path / "repo", tmp_path / "threestudio"
    (work / "results" / "bench").mkdir(parents=True)
    monkeypatch.chdir(work)
    write_command(work / "results" / "bench", elsewhere, Path("configs/cpu.yaml"), 1600,
                  [parse_caption("a photo of a red cube")], ["supervised"], [0, 1], 24, [],
                  refine_config=work / "configs" / "refine.yaml")  # fmt: skip
    text = (work / "results" / "bench" / "COMMAND.md").read_text()
    assert f"--threestudio {elsewhere} " in text and "--out results/bench " in text
    assert "--config configs/cpu.yaml " in text and "--refine-config configs/refine.yaml " in text


def test_test_passes_are_ordered_by_step_and_split_into_rgb_and_opacity(tmp_path):
    import imageio.v2 as imageio
    import numpy as np

    from lmcsds.evaluation.bench3d.scoring import final_test_views, test_passes, test_views

    h = 4
    for step, value in ((200, 10), (1000, 20), (1600, 30)):  # "it1000" sorts before "it200" as text
        folder = tmp_path / "save" / f"it{step}-test"
        folder.mkdir(parents=True)
        for view in range(3):  # threestudio's frame: rgb | normal | opacity, side by side
            frame = np.zeros((h, 3 * h, 3), np.uint8)
            frame[:, :h] = (value, view, 0)
            frame[:, 2 * h :] = 255 * (view % 2)
            imageio.imwrite(folder / f"{view}.png", frame)
    (tmp_path / "save" / "it1600-test.mp4").write_bytes(b"")  # not a folder: ignored
    assert [p.name for p in test_passes(tmp_path)] == ["it200-test", "it1000-test", "it1600-test"]
    rgb, opacity = test_views(tmp_path / "save" / "it1000-test", 2)
    assert rgb.shape == (2, 3, h, h) and opacity.shape == (2, h, h)
    assert rgb[:, 0].mul(255).round().unique().tolist() == [20.0]
    assert rgb[1, 1, 0, 0].mul(255).round().item() == 1.0 and opacity[1].min().item() == 1.0
    assert opacity[0].max().item() == 0.0
    assert final_test_views(tmp_path, 3)[0][0, 0, 0, 0].mul(255).round().item() == 30.0
    with pytest.raises(ValueError, match="need 4"):
        test_views(tmp_path / "save" / "it200-test", 4)


def test_detail_is_read_against_the_ceiling_at_the_same_seed():
    """Ceiling detail 0.4 / 0.8 at seeds 0 / 1, the guidance's 0.2 / 0.8: fractions 0.5 and
    1.0, mean 0.75 (not 0.5 / 0.6 from the means); a plain object (no detail) gives n/a."""
    rows = []
    for seed, (top, mine) in enumerate([(0.4, 0.2), (0.8, 0.8)]):
        base = {k: 0.5 for k in METRICS}
        base.update(prompt="mug", seed=seed, held_out=False, features=[0.0, 1.0])
        rows.append(dict(base, guidance="supervised", detail_ratio=top, part_recall=1.0))
        rows.append(dict(base, guidance="a", detail_ratio=mine, part_recall=0.25 + 0.5 * seed))
        plain = dict(base, prompt="cube", detail_ratio=float("nan"), part_recall=float("nan"))
        rows += [dict(plain, guidance="supervised"), dict(plain, guidance="a")]
    from lmcsds.evaluation.bench3d.report import against_ceiling

    mug, cube = against_ceiling(rows)
    assert (mug["prompt"], mug["guidance"], mug["seeds"]) == ("mug", "a", 2)
    assert mug["detail_of_ceiling"] == pytest.approx(0.75)
    assert {mug["detail_of_ceiling_lo"], mug["detail_of_ceiling_hi"]} <= {0.5, 0.75, 1.0}
    assert mug["part_recall"] == pytest.approx(0.5)
    text = summary_markdown(rows, summarise(rows), None, 1600, 24, None)
    (line,) = [r for r in text.split("against the ceiling")[1].splitlines() if "| cube |" in r]
    assert line.count("n/a") == 2 and "| supervised |" not in text.split("against the ceiling")[1]
    assert against_ceiling([r for r in rows if r["guidance"] == "a"]) == []


@pytest.mark.parametrize("n_rows", [3, 30])
def test_the_render_grid_title_stays_above_the_view_labels(tmp_path, monkeypatch, n_rows):
    import matplotlib.pyplot as plt
    import torch

    from lmcsds.evaluation.bench3d.report import save_renders, view_picks

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    rows = [(f"run-{i}", torch.rand(len(view_picks(24)), 3, 8, 8)) for i in range(n_rows)]
    save_renders("a photo of a blue striped sphere", rows, tmp_path / "renders.png", 24)
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    labels = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    assert len(labels) == 8 and title.y0 > max(label.y1 for label in labels)
    assert title.y1 <= fig.bbox.y1
