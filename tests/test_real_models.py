"""Curvature instruments on the model families people measure, against dense ground truth on tiny members:
a residual CNN with BatchNorm, a transformer with nn.MultiheadAttention over dict batches with a padding mask,
and a model whose batches are tuples of several inputs. Plus parameter blocks and devices."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from overparam.measure.hessian import GaussNewtonOperator, HessianOperator, hessian_eigs, hessian_trace
from overparam.measure.reference import dense_ggn, dense_hessian
from overparam.models import count_parameters, seeded
from overparam.models.resnet import resnet18, resnet20
from overparam.models.transformer import TinyTransformerLM, lm_inputs, lm_loss, synthetic_corpus

F64 = torch.float64


def tiny_resnet():
    model = seeded(lambda: resnet20(width=2, num_classes=3, blocks=1), 0).double()
    X = torch.randn(12, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=F64)
    y = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(2))
    model.train()
    with torch.no_grad():   # running statistics that are not the identity
        for _ in range(3):
            model(X + 0.3)
    return model, X, y


def tiny_lm():
    model = seeded(lambda: TinyTransformerLM(vocab=7, d_model=4, heads=2, layers=1, max_len=6, ff_mult=2), 0).double()
    data = synthetic_corpus(8, seq_len=6, vocab=7, seed=3, min_len=3)
    return model, data


def test_model_zoo_sizes():
    assert count_parameters(resnet20()) == 272_474          # He et al.'s ResNet-20: 0.27M
    assert 11_000_000 < count_parameters(resnet18()) < 11_300_000
    model = TinyTransformerLM()
    out = model(*lm_inputs(synthetic_corpus(3)))
    assert out.shape == (3, 32, 64)


def test_resnet_with_batchnorm_hessian_and_ggn_equal_dense():
    model, X, y = tiny_resnet()
    model.train()   # the caller's mode: instruments measure with eval semantics and restore it
    ref_h = dense_hessian(model, "cross_entropy", (X, y))
    op = HessianOperator(model, "cross_entropy", (X, y), batch_size=5)
    assert "BatchNorm2d" in op.note and model.training
    torch.testing.assert_close(op.dense(), ref_h, rtol=1e-9, atol=1e-11)
    ref_g = dense_ggn(model, "cross_entropy", (X, y))
    torch.testing.assert_close(GaussNewtonOperator(model, "cross_entropy", (X, y), batch_size=5).dense(), ref_g,
                               rtol=1e-9, atol=1e-11)


def test_transformer_with_attention_and_padding_mask_equal_dense():
    model, data = tiny_lm()
    loader = DataLoader([{k: v[i] for k, v in data.items()} for i in range(8)], batch_size=3)
    ref = dense_hessian(model, lm_loss, data, inputs_of=lm_inputs)
    op = HessianOperator(model, lm_loss, loader, inputs_of=lm_inputs)
    H = op.dense()
    # batches of 3, 3, 2 sequences weighted by their size reproduce the mean over sequences of batch means
    # only when every batch has the same token count; compare with the reference on the same batches instead
    ref_batched = sum(len(b["tokens"]) * dense_hessian(model, lm_loss, b, inputs_of=lm_inputs)
                      for b in loader) / 8
    torch.testing.assert_close(H, ref_batched, rtol=1e-8, atol=1e-10)
    one_batch = HessianOperator(model, lm_loss, data, inputs_of=lm_inputs, batch_size=64).dense()
    torch.testing.assert_close(one_batch, ref, rtol=1e-8, atol=1e-10)
    top = hessian_eigs(model, lm_loss, data, inputs_of=lm_inputs, k=2, batch_size=64)
    ev = torch.linalg.eigvalsh(ref).numpy()
    np.testing.assert_allclose(top.values, ev[::-1][:2], rtol=1e-6)


class TwoInputs(nn.Module):
    """A model called as model(a, b): batches are (a, b, y) tuples."""

    def __init__(self):
        super().__init__()
        self.fa, self.fb, self.out = nn.Linear(3, 4), nn.Linear(2, 4), nn.Linear(4, 2)

    def forward(self, a, b):
        return self.out(torch.tanh(self.fa(a) + self.fb(b)))


def test_tuple_batches_with_inputs_of_equal_dense():
    g = torch.Generator().manual_seed(0)
    model = seeded(TwoInputs, 0).double()
    a, b, y = torch.randn(10, 3, generator=g), torch.randn(10, 2, generator=g), torch.randint(0, 2, (10,), generator=g)
    triples = [(a[i:i + 5], b[i:i + 5], y[i:i + 5]) for i in (0, 5)]

    def loss(out, batch):
        return nn.functional.cross_entropy(out, batch[2])

    op = HessianOperator(model, loss, triples, inputs_of=lambda batch: batch[:2])
    ref = dense_hessian(model, loss, [(a, b, y)], inputs_of=lambda batch: batch[:2])
    torch.testing.assert_close(op.dense(), ref, rtol=1e-10, atol=1e-12)


def test_parameter_blocks_select_the_block_of_the_dense_hessian():
    model, X, y = tiny_resnet()
    full = HessianOperator(model, "cross_entropy", (X, y))
    head = HessianOperator(model, "cross_entropy", (X, y), params="head.*")
    sl = full.block_slices()
    idx = torch.cat([torch.arange(sl[n].start, sl[n].stop) for n in head.names])
    torch.testing.assert_close(head.dense(), full.dense()[idx][:, idx], rtol=1e-10, atol=1e-12)
    by_module = HessianOperator(model, "cross_entropy", (X, y), params=[model.head, "stem.0.weight"])
    assert by_module.names == ["stem.0.weight", "head.weight", "head.bias"]
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        HessianOperator(model, "cross_entropy", (X, y), params=["head.*", "nope"])


def test_lanczos_stops_early_with_its_accuracy_and_matches_dense():
    model, X, y = tiny_resnet()
    ev = torch.linalg.eigvalsh(dense_hessian(model, "cross_entropy", (X, y))).numpy()[::-1]
    loose = hessian_eigs(model, "cross_entropy", (X, y), k=1, tol=1e-3)
    tight = hessian_eigs(model, "cross_entropy", (X, y), k=1, tol=1e-10)
    assert loose.converged and tight.converged and loose.n_matvecs < tight.n_matvecs
    assert abs(loose.values[0] - ev[0]) <= 1e-3 * abs(ev[0])          # the promised relative accuracy
    assert abs(tight.values[0] - ev[0]) <= 1e-8 * abs(ev[0])
    gap = loose.values[0] - ev[1]          # the residual alone bounds the error; squared over the gap estimates it
    assert loose.residuals[0] ** 2 / gap <= 1e-3 * abs(loose.values[0]) < loose.residuals[0] * 10
    warm = hessian_eigs(model, "cross_entropy", (X, y), k=1, tol=1e-6, v0=tight.vectors[:, 0])
    assert warm.n_matvecs <= 3                                          # a warm start from the answer


def test_float32_default_for_large_models_and_trace_runs():
    model, X, y = tiny_resnet()
    assert HessianOperator(model, "cross_entropy", (X, y)).dtype == F64       # small: float64
    big = resnet20(width=4).eval()
    assert HessianOperator(big, "cross_entropy", (torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))).dtype == F64
    huge = resnet20(width=16).eval()
    assert HessianOperator(huge, "cross_entropy", (torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))).dtype == \
        torch.float32
    exact = float(torch.diagonal(dense_hessian(model, "cross_entropy", (X, y))).sum())
    est = hessian_trace(model, "cross_entropy", (X, y), method="hutch++", samples=150)
    assert abs(est.estimate - exact) < 0.2 * abs(exact)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_operator_follows_the_models_device():
    model, X, y = tiny_resnet()
    ref = dense_hessian(model, "cross_entropy", (X, y))
    op = HessianOperator(model.cuda(), "cross_entropy", (X, y))
    assert op.device.type == "cuda"
    torch.testing.assert_close(op.dense().cpu(), ref, rtol=1e-8, atol=1e-10)
    top = hessian_eigs(op, k=2)
    assert top.converged
