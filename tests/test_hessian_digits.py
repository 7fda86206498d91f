import pytest
import torch

from pruning_lab.digits import DigitsMLP, load_digits_data
from pruning_lab.hessian import exact_gradient, exact_hessian, set_delta, zeroing_deltas


def test_exact_hessian_of_a_known_function():
    A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    f = lambda x: 0.5 * x @ A @ x + x[0] ** 3  # noqa: E731
    x = torch.tensor([1.0, -2.0], dtype=torch.float64)
    torch.testing.assert_close(exact_hessian(f, x), A + torch.tensor([[6.0, 0], [0, 0]], dtype=torch.float64))
    torch.testing.assert_close(exact_gradient(f, x), A @ x + torch.tensor([3.0, 0], dtype=torch.float64))


def test_zeroing_deltas_match_direct_evaluation():
    f = lambda x: (x.sin() * torch.arange(1.0, 5.0, dtype=x.dtype)).sum() ** 2  # noqa: E731
    x = torch.tensor([0.3, -1.0, 2.0, 0.5], dtype=torch.float64)
    d = zeroing_deltas(f, x)
    for i in range(4):
        y = x.clone()
        y[i] = 0
        assert d[i].item() == pytest.approx((f(y) - f(x)).item())
    p = torch.tensor([True, False, True, False])
    assert set_delta(f, x, p).item() == pytest.approx((f(x.masked_fill(p, 0)) - f(x)).item())
    with pytest.raises(ValueError, match="indices"):
        zeroing_deltas(f, x, [7])
    with pytest.raises(ValueError, match="theta"):
        exact_hessian(f, x.reshape(2, 2))


def test_digits_data_and_layout():
    X, y = load_digits_data()
    assert X.shape == (1797, 64) and y.shape == (1797,) and y.max() == 9
    m = DigitsMLP(X=X, y=y)
    assert m.num_params == 64 * 16 + 16 + 16 * 10 + 10
    assert int(m.is_weight.sum()) == 64 * 16 + 16 * 10
    assert m.layer_of[m.is_weight].bincount().tolist() == [1024, 160]
    theta = m.init(0)
    assert torch.equal(theta, m.init(0)) and not torch.equal(theta, m.init(1))
    assert m.logits(theta).shape == (1797, 10)


def test_training_reaches_a_minimum():
    m = DigitsMLP(sizes=(64, 8, 10))
    theta0 = m.init(0)
    before = theta0.clone()
    theta = m.train(theta0, max_iter=400)
    assert torch.equal(theta0, before)  # the start point is not modified
    assert exact_gradient(m.loss, theta).norm() < 1e-4
    assert m.accuracy(theta) > 0.97


@pytest.mark.parametrize(
    "kwargs, match",
    [({"activation": "sigmoid"}, "activation"), ({"sizes": (64,)}, "sizes"), ({"sizes": (32, 10)}, "sizes"),
     ({"lam": -1.0}, "lam")],
)
def test_bad_configuration(kwargs, match):
    X, y = load_digits_data()
    with pytest.raises(ValueError, match=match):
        DigitsMLP(X=X, y=y, **kwargs)
