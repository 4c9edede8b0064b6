import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from overparam.measure.data import count_examples, iter_batches


def _cat(batches):
    xs, ys = zip(*batches)
    return torch.cat(xs), torch.cat(ys)


def test_every_form_yields_the_same_examples_in_order():
    X, y = torch.randn(25, 3), torch.arange(25)
    for data in ((X, y), TensorDataset(X, y), DataLoader(TensorDataset(X, y), batch_size=7)):
        xs, ys = _cat(iter_batches(data, batch_size=10))
        assert torch.equal(xs, X) and torch.equal(ys, y) and count_examples(data) == 25


def test_dtype_casts_floats_only_and_bad_input_is_refused():
    X, y = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    xb, yb = next(iter_batches((X, y), dtype=torch.float64))
    assert xb.dtype == torch.float64 and yb.dtype == torch.int64
    with pytest.raises(ValueError, match="rows"):
        next(iter_batches((X, y[:3])))
    with pytest.raises(TypeError, match="must be"):
        next(iter_batches([1, 2, 3]))


def test_dict_batches_with_inputs_of_and_their_sizes():
    from overparam.measure.data import batches, convert

    data = {"tokens": torch.arange(20).reshape(10, 2), "mask": torch.ones(10, 2, dtype=torch.bool),
            "w": torch.randn(10)}
    got = list(batches(data, batch_size=4, dtype=torch.float64, inputs_of=lambda b: (b["tokens"], b["mask"])))
    assert [b.n for b in got] == [4, 4, 2]
    assert got[0].args[0].dtype == torch.int64 and got[0].target["w"].dtype == torch.float64
    loader = DataLoader([{"x": torch.randn(3), "y": torch.tensor(i % 2)} for i in range(5)], batch_size=2)
    kw = list(batches(loader, inputs_of=lambda b: {"input": b["x"]}))
    assert [b.n for b in kw] == [2, 2, 1] and set(kw[0].kwargs) == {"input"}
    assert convert({"a": [torch.ones(1)], "b": 3}, torch.float64, None)["a"][0].dtype == torch.float64
    with pytest.raises(TypeError, match="inputs_of"):
        next(batches(loader))
