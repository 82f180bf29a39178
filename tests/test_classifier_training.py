"""The metric classifiers' shared training loop and weight files (priors/classifier_training.py)."""

import json

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lmcsds.priors.classifier_training import fit_epochs, save_classifier


def test_fit_epochs_learns_a_separable_problem_and_visits_every_full_batch(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(200, 2)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()  # linearly separable
    model = torch.nn.Linear(2, 2)
    seen = []

    def loss_of(idx):
        seen.append(idx)
        return F.cross_entropy(model(x[idx]), y[idx])

    opt = torch.optim.Adam(model.parameters(), 1e-2)
    fit_epochs(opt, loss_of, len(x), epochs=20, batch_size=32, desc="test", max_lr=0.1)
    assert len(seen) == 20 * (200 // 32) and all(len(i) == 32 for i in seen)
    first_epoch = torch.cat(seen[: 200 // 32])
    assert len(set(first_epoch.tolist())) == 192  # a permutation: no sample twice in an epoch
    assert (model(x).argmax(1) == y).float().mean() > 0.95

    out = tmp_path / "clf.safetensors"
    save_classifier(str(out), model, {"test_accuracy": 0.97}, {"test_accuracy": "0.97"})
    weights = load_file(str(out))
    assert torch.equal(weights["weight"], model.weight.detach())
    assert json.loads(out.with_suffix(".json").read_text()) == {"test_accuracy": 0.97}
