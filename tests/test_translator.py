"""The translation network (paper Sec. 5.2): architecture, schedule, task with exact targets,
its metrics' oracles, and the trainer (the core step as its loss, resume)."""

from pathlib import Path

import pytest
import torch

from lmcsds.core.corrective import CorrectiveConfig, CorrectiveUNet
from lmcsds.core.unet import ConditionedUNet, frequency_encoding
from lmcsds.evaluation import translation as TR
from lmcsds.priors import translation_task as TT
from lmcsds.training import translator as T

ROOT = Path(__file__).resolve().parents[1]
PRIOR = ROOT / "load/lmcsds/priors/objects-if-32"
CORRECTIVE = ROOT / "load/lmcsds/correctives/objects-if-32.safetensors"
CLASSIFIER = ROOT / "load/lmcsds/priors/objects-classifier.safetensors"


@pytest.fixture(scope="module")
def task():
    return TT.render_translation(2, seed=5, progress=False)


def test_paper_translator_has_eleven_levels_capped_at_256_filters():
    net = T.make_translator(T.TranslatorConfig(out="x"))
    encoder = [b[0].out_channels for b in net.down] + [net.bottleneck[0].out_channels]
    assert encoder == [32, 64, 128, 256, 256, 256]  # doubled from 32 until 256
    assert len(net.down) + 1 + len(net.decode) == 11
    assert net.down[0][0].in_channels == 3 + 10  # the image and the class's 10-d encoding
    y = net(torch.rand(2, 3, 32, 32) * 2 - 1, torch.tensor([0.0, 0.5]))
    assert y.shape == (2, 3, 32, 32) and y.abs().max() < 1  # tanh output


def test_residual_unet_is_the_identity_at_initialisation_and_the_corrective_shares_it():
    net = ConditionedUNet(3, 8, 2, 5, residual=True)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(net(x, torch.tensor([0.1, 0.7])), x)
    corrective = CorrectiveUNet(CorrectiveConfig(base_channels=8, depth=2), 1000)
    t = torch.tensor([250, 999])
    # the corrective is the shared U-Net conditioned on t / T
    assert torch.equal(corrective(x, t), ConditionedUNet.forward(corrective, x, t / 1000))
    enc = frequency_encoding(torch.tensor([0.25]), 2)  # sin/cos of pi x 2^k at x = 1/4
    expected = torch.tensor([[2**-0.5, 1.0, 2**-0.5, 0.0]])
    torch.testing.assert_close(enc, expected, atol=1e-6, rtol=0)


def test_loss_weights_follow_the_papers_cosine_schedule():
    cfg = T.TranslatorConfig(out="x")  # guidance 0.1 -> 1, L2 1 -> 0.1 over 20K steps
    assert T.loss_weights(0, cfg) == pytest.approx((0.1, 1.0))
    assert T.loss_weights(10_000, cfg) == pytest.approx((0.55, 0.55))
    assert T.loss_weights(5_000, cfg)[0] == pytest.approx(0.1 + 0.9 * (1 - 2**-0.5) / 2)
    assert T.loss_weights(20_000, cfg) == T.loss_weights(150_000, cfg) == pytest.approx((1, 0.1))


def test_task_targets_are_the_same_object_in_the_target_colour(task):
    from lmcsds.priors.objects3d import COLOURS

    assert task.source.shape[0] == 2 * len(TT.source_specs())
    assert task.target.shape[1] == len(TT.TARGET_COLOURS)
    off = (task.mask == 0).expand_as(task.source)
    for k in range(len(TT.TARGET_COLOURS)):  # the backdrop is untouched, the object recoloured
        assert torch.equal(task.target[:, k][off], task.source[off])
    # an albedo-shaded plain object shows exactly its colour: red in the source, blue in class 0
    plain = [i for i, s in enumerate(task.specs) if s.pattern == "plain"]
    i = int(torch.nonzero(torch.isin(task.spec, torch.tensor(plain)))[0])
    inside = task.mask[i, 0] == 255
    src, tgt = task.source[i].float() / 255, task.target[i, 0].float() / 255
    ratio = tgt[:, inside].mean(1) / torch.tensor(COLOURS["blue"])
    red = src[:, inside].mean(1) / torch.tensor(COLOURS["red"])
    assert torch.allclose(ratio / ratio[2], torch.ones(3), atol=0.05)  # the same shading factor
    assert torch.allclose(red / red[0], torch.ones(3), atol=0.05)


def test_splits_hold_out_pairs_and_partition_them(task):
    train, held = task.pairs("train"), task.pairs("heldout-pairs")
    assert len(train) + len(held) == len(task) * len(TT.TARGET_COLOURS)
    seen = {(task.specs[int(task.spec[i])].shape, TT.TARGET_COLOURS[k]) for i, k in held.tolist()}
    assert seen == set(TT.HELD_OUT_PAIRS)
    assert not seen & {(task.specs[int(task.spec[i])].shape, TT.TARGET_COLOURS[k])
                       for i, k in train.tolist()}  # fmt: skip
    i = int(held[0, 0])
    assert task.captions(held[:1]) == [TT.target_spec(task.specs[int(task.spec[i])],
                                                      int(held[0, 1])).caption()]  # fmt: skip
    with pytest.raises(ValueError, match="split must be one of"):
        task.pairs("test")


def test_psnr_and_ssim_match_hand_values_and_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    mse = (x - y).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(TR.psnr(x, y), -10 * torch.log10(mse))
    for i in range(2):
        ref = skm.structural_similarity(
            x[i].numpy(), y[i].numpy(), channel_axis=0, data_range=1.0, gaussian_weights=True,
            sigma=1.5, use_sample_covariance=False,
        )  # fmt: skip
        # scikit-image pads and crops (win - 1) / 2 = 5 px at each border; this has no padding
        assert TR.ssim(x[i : i + 1], y[i : i + 1]).item() == pytest.approx(ref, abs=0.01)
    assert TR.ssim(x, x).tolist() == pytest.approx([1.0, 1.0])


def test_translation_metrics_pass_their_oracles(task):
    """The exact target scores best; the untranslated source fails the target colour and keeps
    everything else; a flat-coloured object fails detail and pattern."""
    from lmcsds.priors.objects_classifier import load_object_classifier

    classifier = load_object_classifier(str(CLASSIFIER))
    pairs = task.pairs("train")
    src, tgt, mask = task.batch(pairs)
    labels = torch.tensor([s.labels for s in task.specs])[task.spec[pairs[:, 0]]]

    def score(out):
        return TR.translation_scores(out, tgt, src, mask, pairs[:, 1], labels, classifier)

    truth, source = score(tgt), score(src)
    assert truth["delta_e"] == 0 and truth["ssim"] == pytest.approx(1) and truth["psnr"] > 100
    assert truth["detail_ratio"] == pytest.approx(1) and truth["target_accuracy"] > 0.8
    assert truth["r_precision"] >= truth["target_accuracy"] and truth["shape_kept"] > 0.7
    assert source["source_delta_e"] == 0 and source["target_accuracy"] < 0.1
    assert source["delta_e"] > 30 and source["shape_kept"] > 0.7
    patterned = torch.tensor(
        [task.specs[int(task.spec[i])].pattern != "plain" for i in pairs[:, 0]]
    )
    inside = mask > 0.5
    mean = (tgt * inside).sum((2, 3), keepdim=True) / inside.sum((2, 3), keepdim=True).clamp(min=1)
    flat = torch.where(inside, mean, tgt)  # each object filled with its mean colour
    flat_scores = TR.translation_scores(flat[patterned], tgt[patterned], src[patterned],
                                        mask[patterned], pairs[patterned, 1], labels[patterned],
                                        classifier)  # fmt: skip
    true_patterned = TR.translation_scores(tgt[patterned], tgt[patterned], src[patterned],
                                           mask[patterned], pairs[patterned, 1],
                                           labels[patterned], classifier)  # fmt: skip
    assert flat_scores["detail_ratio"] < 0.5 * true_patterned["detail_ratio"]
    assert flat_scores["pattern_kept"] < true_patterned["pattern_kept"] - 0.3
    assert flat_scores["delta_e"] > 10


def _tiny(out, **kw):
    base = dict(out=str(out), steps=4, batch_size=2, base_channels=4, depth=2, warmup_steps=2,
                checkpoint_every=2, sample_every=4, log_every=2)  # fmt: skip
    return T.TranslatorConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def objects_prior():
    return T.setup(str(PRIOR), str(CORRECTIVE), "lmc-sds", "cpu")


def test_guidance_loss_gradient_is_the_core_steps_g(task, objects_prior):
    """The translator's guidance loss back-propagates exactly the core step's g / B."""
    from lmcsds.core.lmc_sds import lmc_sds_step
    from lmcsds.core.noise import seeded_generator

    prior, corrective, normalization = objects_prior
    for loss_type in ("lmc-sds", "dds"):
        cfg = _tiny("x", loss_type=loss_type)
        guidance = T.Guidance(prior, corrective, normalization, task, cfg, str(PRIOR))
        pairs = task.pairs("train")[:3]
        x, _, _ = task.batch(pairs)
        y = (x * 0.8).requires_grad_(True)
        guidance.loss(y, x, pairs, seeded_generator(7, 1)).backward()
        gen = seeded_generator(7, 1)  # the same draws: t, then eps
        t = torch.randint(20, 981, (3,), generator=gen)
        eps = torch.randn(y.shape, generator=gen)
        spec = task.spec[pairs[:, 0]]
        target = guidance.emb_target[spec, pairs[:, 1]]
        out = lmc_sds_step(prior, corrective, y.detach(), t, target,
                           guidance.emb_0.expand(3, -1, -1), eps, guidance.step_cfg,
                           emb_neg=guidance.emb_neg.expand(3, -1, -1),
                           source=(x, guidance.emb_source[spec]))  # fmt: skip
        torch.testing.assert_close(y.grad, out.g / 3)
        if loss_type == "dds":  # DDS's source prompt is the source object's caption
            assert guidance.emb_source.shape[0] == len(task.specs)


def test_trainer_resumes_to_the_same_weights_and_refuses_changed_settings(
    task, objects_prior, tmp_path
):
    prior, corrective, normalization = objects_prior
    cfg = _tiny(tmp_path / "straight")
    guidance = T.Guidance(prior, corrective, normalization, task, cfg, str(PRIOR))
    straight = T.train_translator(cfg, task, guidance, progress=False)
    half = _tiny(tmp_path / "halves", steps=2)
    T.train_translator(half, task, guidance, progress=False)
    resumed = T.train_translator(_tiny(tmp_path / "halves"), task, guidance, resume=True,
                                 progress=False)  # fmt: skip
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert (tmp_path / "straight/samples/step0000004.png").exists()
    assert list((tmp_path / "straight/tensorboard").glob("events.*"))
    net, loaded_cfg, step = T.load_translator(str(tmp_path / "straight"))
    assert step == 4 and loaded_cfg == cfg
    with pytest.raises(ValueError, match="omega"):
        T.train_translator(_tiny(tmp_path / "halves", omega=7.0), task, guidance, resume=True,
                           progress=False)  # fmt: skip


def test_comparison_table_means_intervals_and_paired_differences(tmp_path):
    """Hand-made scores: sds is 0.25 below lmc-sds on every object and seed, so its paired
    difference is exactly -0.25 with an interval that excludes 0; a tie is not claimed."""
    import json

    objects = ["a photo of a red cube", "a photo of a red mug", "a photo of a red sphere"]
    for loss, offset in (("lmc-sds", 0.0), ("sds", -0.25)):
        for seed in (0, 1):
            values = lambda j: {m: 0.5 + 0.1 * j + 0.01 * seed + (offset if m == "ssim" else 0)
                                for m in TR.METRICS}  # noqa: E731  # fmt: skip
            split = {
                "rows": 3,
                **values(0),
                "objects": {o: values(j) for j, o in enumerate(objects)},
            }
            run = tmp_path / f"{loss}-s{seed}"
            run.mkdir()
            (run / "scores.json").write_text(json.dumps({s: split for s in TR.EVAL_SPLITS}))
    text = TR.compare_runs(tmp_path)
    means, paired = text.split("## heldout-pairs")[0].split("Paired differences")
    assert "| lmc-sds | 2 | 0.605 [" in means  # mean of 0.5, 0.6, 0.7 (+0, +0.01)
    (sds,) = [row for row in means.splitlines() if row.startswith("| sds |")]
    assert sds.strip("| ").split(" | ")[2 + TR.METRICS.index("ssim")].startswith("0.355 [")
    (line,) = [row for row in paired.splitlines() if row.startswith("| sds |")]
    cells = line.strip("| ").split(" | ")[1:]
    for metric, cell in zip(TR.METRICS, cells):
        if metric == "ssim":
            assert cell == "**-0.250 [-0.250, -0.250]**"
        else:  # a tie is not claimed
            assert cell == "+0.000 [+0.000, +0.000]"


def test_evaluate_scores_each_split_and_each_source_object(task):
    from lmcsds.priors.objects_classifier import load_object_classifier

    scores = TR.evaluate(None, task, load_object_classifier(str(CLASSIFIER)))  # the identity
    assert scores["heldout-cameras"]["rows"] == len(task.pairs("heldout-cameras"))
    assert len(scores["heldout-cameras"]["objects"]) == len(task.specs)
    held_shapes = {shape for shape, _ in TT.HELD_OUT_PAIRS}
    assert {c.split()[-1] for c in scores["heldout-pairs"]["objects"]} == held_shapes
    for split in TR.EVAL_SPLITS:
        assert scores[split]["source_delta_e"] == 0 and scores[split]["target_accuracy"] < 0.1
