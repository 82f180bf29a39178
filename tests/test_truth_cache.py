"""The benchmark's ground truth is rendered once per object and camera set, then read back."""

import torch
from omegaconf import OmegaConf

from lmcsds.evaluation.bench3d import truth as T
from lmcsds.priors.objects3d import ObjectSpec


def test_a_truth_is_rendered_once_and_read_back_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("LMCSDS_CACHE", str(tmp_path))
    calls = []
    render = T.render
    monkeypatch.setattr(T, "render", lambda *a, **k: calls.append(1) or render(*a, **k))
    data = OmegaConf.create({"eval_height": 16, "eval_elevation_deg": 15.0})
    spec = ObjectSpec("mug", "red", "checkered")
    first = T.ground_truth(spec, 2, data)
    again = T.ground_truth(spec, 2, data)
    assert len(calls) == 1 and len(list((tmp_path / "truth").glob("*.pt"))) == 1
    for key in ("rgb", "mask", "depth", "view"):
        assert torch.equal(getattr(first, key), getattr(again, key)), key
    assert torch.equal(first.cameras.azimuth_deg, again.cameras.azimuth_deg)
    # another camera, another object part set: rendered anew, kept apart
    T.ground_truth(spec, 2, OmegaConf.create({"eval_height": 16, "eval_elevation_deg": 30.0}))
    less = T.ground_truth(spec, 2, data, without=("handle",))
    assert len(calls) == 3 and not torch.equal(less.mask, first.mask)
    # a damaged file is rendered again and replaced
    for f in (tmp_path / "truth").glob("*.pt"):
        f.write_bytes(b"not a tensor file")
    assert torch.equal(T.ground_truth(spec, 2, data).rgb, first.rgb) and len(calls) == 4
