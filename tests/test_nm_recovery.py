"""2:4 pruning of the digits MLP and fine-tuning with the mask fixed (Chapter 7)."""
import pytest
import torch

from pruning_lab import nm_recovery as nr
from pruning_lab.digits import DigitsMLP
from pruning_lab.nm import check_nm


@pytest.fixture(scope="module")
def trained():
    X_tr, y_tr, X_te, y_te = nr.split_digits()
    model = DigitsMLP(sizes=(64, 16, 10), X=X_tr, y=y_tr)
    return model, model.train(model.init(0), max_iter=300), (X_te, y_te)


def test_split_is_disjoint_and_sized():
    X_tr, y_tr, X_te, y_te = nr.split_digits(n_test=400)
    assert len(y_te) == 400 and len(y_tr) == 1797 - 400
    rows = lambda X: {tuple(r.tolist()) for r in X}  # noqa: E731
    assert not rows(X_tr) & rows(X_te)
    with pytest.raises(ValueError, match="n_test"):
        nr.split_digits(n_test=0)


def test_mask_is_2_4_per_weight_matrix_and_keeps_biases(trained):
    model, theta, _ = trained
    keep = nr.nm_theta_mask(model, theta, 2, 4)
    for w, shape, b in model.slices:
        assert check_nm((theta * keep)[w].reshape(shape), 2, 4)
        assert keep[w].double().mean() == 0.5 and keep[b].all()
    with pytest.raises(ValueError, match="m"):
        nr.nm_theta_mask(model, theta, 2, 5)


def test_finetuning_keeps_the_mask_and_lowers_the_loss(trained):
    model, theta, _ = trained
    keep = nr.nm_theta_mask(model, theta, 2, 4)
    before = theta.clone()
    tuned = nr.finetune_masked(model, theta, keep, max_iter=100)
    assert torch.equal(theta, before)
    assert (tuned[~keep] == 0).all()
    assert model.loss(tuned) < model.loss(theta * keep)
    with pytest.raises(ValueError, match="keep"):
        nr.finetune_masked(model, theta, keep.double())


def test_recovery_experiment_shapes():
    res = nr.recovery_experiment(seeds=(0, 1), train_iter=100, finetune_iter=30)
    assert set(res) == {f"{a}_{k}" for a in ("dense", "one_shot", "finetuned") for k in ("acc", "loss")}
    assert all(v.shape == (2,) for v in res.values())
    assert (res["finetuned_loss"] < res["one_shot_loss"]).all()
