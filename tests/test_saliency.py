import pytest
import torch

from pruning_lab.saliency import least_damaging, magnitude_saliency, obd_saliency, quadratic_delta, taylor_saliency

W = torch.tensor([0.5, 0.02, 1.0, 0.001, 0.3], dtype=torch.float64)
H = torch.tensor([1.0, 100.0, 1.0, 50.0, 1.0], dtype=torch.float64)


def test_worked_example_chapter2():
    s = obd_saliency(W, H)
    torch.testing.assert_close(s, torch.tensor([0.125, 0.02, 0.5, 2.5e-5, 0.045], dtype=torch.float64))
    assert least_damaging(s) == 3
    # errata 1: w2 and w4 are 800x apart, not "roughly the same"
    assert s[1] / s[3] == pytest.approx(800.0)
    stiff = obd_saliency(W, torch.tensor([1.0, 1, 1, 1, 1000], dtype=torch.float64))
    assert stiff[4].item() == pytest.approx(45.0)


def test_isotropic_curvature_ranks_like_magnitude():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(50, generator=g, dtype=torch.float64)
    s = obd_saliency(w, torch.full_like(w, 3.0))
    assert torch.equal(torch.argsort(s), torch.argsort(magnitude_saliency(w)))


def test_taylor_reduces_to_obd_at_a_minimum_and_has_gradient_term():
    torch.testing.assert_close(taylor_saliency(W, torch.zeros_like(W), H), obd_saliency(W, H))
    g = torch.ones_like(W)
    torch.testing.assert_close(taylor_saliency(W, g, H), obd_saliency(W, H) - W)


def test_quadratic_delta_is_exact_on_a_quadratic():
    gen = torch.Generator().manual_seed(1)
    d = 6
    A = torch.randn(d, d, generator=gen, dtype=torch.float64)
    Hm = A @ A.T + torch.eye(d, dtype=torch.float64)
    b = torch.randn(d, generator=gen, dtype=torch.float64)
    loss = lambda x: 0.5 * x @ Hm @ x + b @ x  # noqa: E731
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    grad = Hm @ w + b
    prune = torch.tensor([True, False, True, True, False, False])
    actual = loss(w.masked_fill(prune, 0.0)) - loss(w)
    torch.testing.assert_close(quadratic_delta(w, grad, Hm, prune), actual)
    # one weight: the full quadratic equals the Taylor saliency
    one = torch.zeros(d, dtype=torch.bool)
    one[2] = True
    torch.testing.assert_close(quadratic_delta(w, grad, Hm, one), taylor_saliency(w, grad, Hm.diagonal())[2])


def test_least_damaging_breaks_ties_by_index():
    assert least_damaging(torch.tensor([3.0, 1.0, 1.0, 2.0])) == 1


def test_inputs_are_not_modified():
    w, h = W.clone(), H.clone()
    obd_saliency(w, h)
    taylor_saliency(w, torch.ones_like(w), h)
    quadratic_delta(w, None, torch.diag(h), torch.ones(5, dtype=torch.bool))
    assert torch.equal(w, W) and torch.equal(h, H)


def test_accepts_lists_and_keeps_dtype():
    assert obd_saliency([1.0, 2.0], [2.0, 2.0]).tolist() == [1.0, 4.0]
    assert obd_saliency(W.float(), H.float()).dtype == torch.float32


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: obd_saliency(W, -H), "hessian_diag"),
        (lambda: obd_saliency(W, H[:3]), "hessian_diag"),
        (lambda: obd_saliency(torch.tensor([float("nan"), 1.0]), torch.ones(2)), "weight"),
        (lambda: obd_saliency(W, H * float("inf")), "hessian_diag"),
        (lambda: taylor_saliency(W, torch.ones(3), H), "grad"),
        (lambda: quadratic_delta(W, None, torch.eye(4), torch.ones(5, dtype=torch.bool)), "hessian"),
        (lambda: quadratic_delta(W, None, torch.eye(5), torch.ones(5)), "prune"),
        (lambda: quadratic_delta(W.reshape(5, 1), None, torch.eye(5), torch.ones(5, dtype=torch.bool)), "weight"),
        (lambda: least_damaging(torch.tensor([])), "saliency"),
        (lambda: magnitude_saliency("abc"), "weight"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
