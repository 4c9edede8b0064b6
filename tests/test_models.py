import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from overparam.models import MLP, count_parameters, mlp_parameter_count, seeded


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 50), st.lists(st.integers(1, 40), min_size=0, max_size=4), st.integers(1, 12), st.booleans())
def test_parameter_count_closed_form(d_in, widths, d_out, bias):
    assert count_parameters(MLP(d_in, widths, d_out, bias=bias)) == mlp_parameter_count(d_in, widths, d_out, bias)


def test_mnist1d_reference_count():
    # 40-h-h-10 with h=61, the MNIST-1D notebook's interpolation threshold: 6,903 parameters.
    assert mlp_parameter_count(40, [61, 61], 10) == 40 * 61 + 61 + 61 * 61 + 61 + 61 * 10 + 10 == 6903


def test_seeded_is_deterministic_and_leaves_global_rng():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = seeded(lambda: MLP(5, [7], 3), seed=4)
    b = seeded(lambda: MLP(5, [7], 3), seed=4)
    c = seeded(lambda: MLP(5, [7], 3), seed=5)
    assert torch.equal(torch.rand(1), expected_next)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_bad_sizes_raise():
    import pytest

    with pytest.raises(ValueError, match="layer sizes"):
        MLP(3, [0], 2)
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(3, [2], 2, activation="swishy")
