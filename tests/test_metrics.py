"""Every metric on inputs with a known answer."""

import torch
import torch.nn.functional as F

from lmcsds.core.spectra import high_frequency_energy, radial_power_spectrum
from lmcsds.evaluation import metrics as M


def photos(n=8, size=32, seed=0):
    """Real photo crops (scikit-image astronaut), not synthetic noise."""
    import skimage.data as skd

    img = torch.from_numpy(skd.astronaut()).permute(2, 0, 1).float() / 127.5 - 1
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        y, x = torch.randint(0, 512 - size, (2,), generator=gen).tolist()
        out.append(img[:, y : y + size, x : x + size])
    return torch.stack(out)


def blur(x):
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (k[:, None] * k[None]) / 256
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k.expand(3, 1, 5, 5), groups=3)


def test_spectrum_of_a_pure_frequency_peaks_at_it():
    y = torch.arange(32).float()
    wave = torch.cos(2 * torch.pi * 5 * y / 32)[None, None, :, None].expand(1, 3, 32, 32)
    spectrum = radial_power_spectrum(wave)[0]
    assert spectrum.argmax().item() == 4  # entry k is frequency k + 1
    far = (torch.arange(16) - 4).abs() >= 3  # the Hann window's main lobe is +-2 bins wide
    assert spectrum[4] > 100 * spectrum[far].max()


def test_blurring_lowers_high_frequency_energy():
    x = photos()
    assert (high_frequency_energy(blur(x)) < high_frequency_energy(x)).all()
    assert M.relative_hf_energy(blur(x), x) < 0.5
    assert abs(M.relative_hf_energy(x, x) - 1) < 1e-6


def test_identical_sets_give_zero_distance():
    x = photos()
    assert M.derivative_histogram_distance(x, x) == 0
    f = torch.randn(16, 128)
    assert abs(M.mmd(f, f)) < 1e-9
    assert M.mmd(f, f + 1.0) > 0.1
    assert M.mean_pairwise_distance(f[:1].expand(5, -1)) == 0
    assert M.mean_pairwise_distance(f) > 1


def test_blur_changes_derivative_statistics():
    x = photos()
    assert M.derivative_histogram_distance(blur(x), x) > 0.1


def test_mean_pairwise_distance_hand_computed():
    f = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]])
    # pairs: 5, 8, 5 -> mean 6
    assert abs(M.mean_pairwise_distance(f) - 6.0) < 1e-9


def test_a_clipped_image_reads_as_saturated():
    x = photos()
    saturated = (3 * x).clamp(-1, 1)
    assert M.clipped_fraction(saturated) > M.clipped_fraction(x) + 0.2
    assert M.contrast_ratio(saturated, x) > 1.2
    assert abs(M.contrast_ratio(x, x) - 1) < 1e-6
    assert M.clipped_fraction(torch.ones(1, 3, 4, 4)) == 1.0


def test_class_scores():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([[10.0, 0.0], [0.0, 10.0], [10.0, 0.0]])

    s = M.class_scores(Fixed(), torch.zeros(3, 3, 4, 4), torch.tensor([0, 1, 1]))
    assert abs(s["accuracy"] - 2 / 3) < 1e-6
    p = torch.tensor([10.0, 0.0]).softmax(0)
    assert abs(s["target_probability"] - (p[0] + p[0] + p[1]).item() / 3) < 1e-6


def test_metric_tables_show_small_values_instead_of_zero(tmp_path):
    """A blob's high-frequency energy (~1e-4) printed as 0.000 looked like no detail at all."""
    from lmcsds.evaluation.experiments import write_tables

    write_tables([{"run": "a", "hf_energy": 0.00042, "iou": 0.5, "zero": 0.0}], tmp_path, "t")
    row = (tmp_path / "metrics.md").read_text().splitlines()[-1]
    assert row == "| a | 4.20e-04 | 0.500 | 0.000 |"
