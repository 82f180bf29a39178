"""The offline Fashion-MNIST prior: its trainer resumes, the committed artifacts load and pass
their checks, the experiment runner and the demo run a few steps on them."""

import json
from pathlib import Path

import pytest
import torch

from .conftest import ROOT

LOAD = ROOT / "load" / "lmcsds"
PRIOR = LOAD / "priors" / "fmnist-if-32"
CORRECTIVE = LOAD / "correctives" / "fmnist-if-32.safetensors"
CLASSIFIER = LOAD / "priors" / "fmnist-classifier.safetensors"


def fmnist_available() -> bool:
    from lmcsds.priors.fmnist_data import FMNIST_DIR

    return (Path(FMNIST_DIR) / "t10k-images-idx3-ubyte.gz").exists()


needs_fmnist = pytest.mark.skipif(
    not fmnist_available(), reason="dataset-fashion-mnist not installed (make setup installs it)"
)


def test_committed_prior_corrective_and_classifier_load_and_check():
    from lmcsds.core import IFPrior, load_corrective
    from lmcsds.priors.fmnist_classifier import load_classifier

    prior = IFPrior.from_pretrained(str(PRIOR), device="cpu", half_precision=False)
    assert (prior.prior_id, prior.resolution) == ("fmnist-if-32", 32)
    assert prior.unet.config.out_channels == 6
    assert prior.scheduler.config.variance_type == "learned_range"
    model, meta = load_corrective(CORRECTIVE, prior.prior_id, prior.resolution)
    assert meta.training_steps > 0
    assert load_classifier(str(CLASSIFIER))(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    report = json.loads((CLASSIFIER.with_suffix(".json")).read_text())
    assert report["test_accuracy"] > 0.85


@needs_fmnist
def test_classifier_accuracy_on_real_test_images():
    from lmcsds.priors.fmnist_classifier import accuracy, load_classifier
    from lmcsds.priors.fmnist_data import load_split

    x, y = load_split("test")
    assert accuracy(load_classifier(str(CLASSIFIER)), x[:2000], y[:2000]) > 0.85


@needs_fmnist
def test_experiment_runner_few_steps(tmp_path):
    from lmcsds.evaluation.experiments import editing, fashion_mnist_setup, synthesis
    from lmcsds.evaluation.optimise import OptimConfig

    setup = fashion_mnist_setup(str(PRIOR), str(CORRECTIVE), str(CLASSIFIER), classes=(0, 7))
    rows = synthesis(
        setup,
        tmp_path / "syn",
        ("sds", "lmc-sds"),
        (5.0,),
        2,
        (False, True),
        OptimConfig(steps=3, decay_steps=2, whole_steps=1),
        size=48,
    )
    assert {r["run"] for r in rows} == {
        "SDS w=5",
        "LMC-SDS w=5",
        "SDS w=5 fixed-eps",
        "LMC-SDS w=5 fixed-eps",
    }
    for name in ("grid.png", "statistics.png", "vs_omega.png", "metrics.md", "metrics.csv"):
        assert (tmp_path / "syn" / name).stat().st_size > 0
    assert 0 <= rows[0]["accuracy"] <= 1 and rows[0]["diversity"] >= 0
    rows = editing(
        setup,
        tmp_path / "edit",
        ("lmc-sds", "dds", "nfsd", "csd", "ms-sds"),
        l2_weights=(0.1,),
        per_class=1,
        cfg=OptimConfig(steps=2, whole_steps=1),
    )
    assert rows[0]["feature_distance_to_source"] >= 0
    assert [r["unet_rows"] for r in rows] == [2, 4, 3, 2, 10]  # csd: no negative weight
    with pytest.raises(ValueError, match="experiments edit"):
        synthesis(setup, tmp_path / "dds", ("dds",), (5.0,), 1)


@needs_fmnist
def test_prior_trainer_resumes(tmp_path, monkeypatch):
    from lmcsds.core import IFPrior
    from lmcsds.priors.train import train_prior

    monkeypatch.chdir(tmp_path)
    (tmp_path / "build").mkdir()
    train_prior(str(tmp_path / "p"), minutes=10, steps=1, batch_size=4, checkpoint_every=1)
    ckpt = torch.load(tmp_path / "build" / "p-training.ckpt", weights_only=False)
    assert ckpt["step"] == 1
    train_prior(str(tmp_path / "p"), minutes=10, steps=2, batch_size=4, checkpoint_every=1)
    assert torch.load(tmp_path / "build" / "p-training.ckpt", weights_only=False)["step"] == 2
    prior = IFPrior.from_pretrained(str(tmp_path / "p"), device="cpu", half_precision=False)
    assert prior.resolution == 32


@needs_fmnist
def test_committed_corrective_is_stable_on_held_out_images(tmp_path):
    """Every stability gain of the bundled corrective is positive: no component of the image
    grows under g_lmc (the paper-UNet corrective failed exactly this: colour gains < 0)."""
    from lmcsds.core import IFPrior
    from lmcsds.core.text import encode_prompts
    from lmcsds.priors.fmnist_data import export_pngs
    from lmcsds.training.images import scan_images
    from lmcsds.training.report import corrective_report

    export_pngs("test", str(tmp_path / "val"), limit=24)
    prior = IFPrior.from_pretrained(str(PRIOR), device="cpu", half_precision=False)
    paths = scan_images(str(tmp_path / "val"), 32).usable
    report = corrective_report(
        str(CORRECTIVE), prior, encode_prompts(str(PRIOR), [""]), paths, str(tmp_path / "r"),
        num_images=24, mc_samples=4,
    )  # fmt: skip
    for row in report["buckets"]:  # (the paper-UNet corrective: colour -0.56 ... -0.31)
        assert row["colour_gain_lmc"] > 0.05, row
        assert row["contrast_gain_lmc"] > -0.01, row  # about 0 at small t, where zhat ~ z
    assert report["overall"]["rel_err_mc"] < report["overall"]["rel_err_mc_identity"]


@needs_fmnist
def test_synthesis_seed_picks_the_noise(tmp_path):
    """--seed: the same seed repeats a run exactly, another seed gives other images."""
    from lmcsds.evaluation.experiments import fashion_mnist_setup, synthesis
    from lmcsds.evaluation.optimise import OptimConfig

    setup = fashion_mnist_setup(str(PRIOR), str(CORRECTIVE), str(CLASSIFIER), classes=(0,))
    cfg = OptimConfig(steps=2, decay_steps=2, whole_steps=2)
    images = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        synthesis(setup, tmp_path / name, ("lmc-sds",), (5.0,), 1, (False,), cfg, seed=seed)
        images[name] = torch.load(tmp_path / name / "images.pt")["LMC-SDS w=5"]
        assert json.loads((tmp_path / name / "config.json").read_text())["seed"] == seed
    assert torch.equal(images["a"], images["b"])
    assert not torch.equal(images["a"], images["c"])


def test_prompt_files_with_and_without_class_labels(tmp_path):
    from lmcsds.evaluation.experiments import read_prompts

    plain = tmp_path / "plain.txt"
    plain.write_text("a photo of a hamburger\n\na zoomed out photo of a corgi\n")
    assert read_prompts(str(plain)) == (
        ["a photo of a hamburger", "a zoomed out photo of a corgi"],
        None,
    )
    labelled = tmp_path / "labelled.txt"
    labelled.write_text("9 | a sturdy leather boot\nDress | an evening gown\n")
    assert read_prompts(str(labelled)) == (["a sturdy leather boot", "an evening gown"], [9, 3])
    for text, message in (
        ("9 | a boot\na dress\n", "has no 'LABEL | '"),
        ("hat | a hat\n", "unknown class label 'hat'"),
        ("10 | a boot\n", "unknown class label '10'"),
        ("\n", "no prompts"),
    ):
        labelled.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_prompts(str(labelled))


@needs_fmnist
def test_labelled_custom_prompts_are_scored_against_their_class(tmp_path):
    """Another wording of class 9 (ankle boot): the classifier scores it against class 9."""
    from lmcsds.evaluation.experiments import fashion_mnist_setup, synthesis
    from lmcsds.evaluation.optimise import OptimConfig

    setup = fashion_mnist_setup(
        str(PRIOR), str(CORRECTIVE), str(CLASSIFIER), classes=[9], prompts=["an ankle boot"]
    )
    assert setup.prompts == ["an ankle boot"] and setup.labels == [9]
    assert len(setup.real[0]) == 200  # real ankle boots, for the distribution metrics
    cfg = OptimConfig(steps=2, decay_steps=2, whole_steps=2)
    rows = synthesis(setup, tmp_path, ("lmc-sds",), (5.0,), 1, (False,), cfg)
    assert 0.0 <= rows[0]["accuracy"] <= 1.0
