"""Study `tensorized`: model builders against exact answers, the checks on synthetic curves (pass on the published
shape, fail without it), and one tiny real run."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from overparam.config import ConfigError, resolve_config
from overparam.models import MLP, count_parameters
from overparam.models.tt import TTLinear
from overparam.studies import base
from overparam.studies import tensorized as tz
from overparam.studies.base import RunContext


def _cfg(**sets):
    return resolve_config(tz.TensorizedConfig, tz.PRESETS, "quick", sets=sets)


def _verdicts(result):
    return {c.name: c.passed for c in result.checks}


def test_registered_with_both_presets():
    assert set(base.REGISTRY["tensorized"].presets) >= {"quick", "paper"}
    _cfg()
    resolve_config(tz.TensorizedConfig, tz.PRESETS, "paper")
    with pytest.raises(ConfigError):
        _cfg(ranks="4,2")
    with pytest.raises(ConfigError):
        _cfg(width=4, modes=3)


def test_hidden_modes_and_counts_by_hand():
    assert tz.hidden_modes(64, 256, 2, 3) == [([4, 4, 4], [8, 8, 4]), ([8, 8, 4], [8, 8, 4])]
    net = tz.tt_mlp(64, 256, 2, 10, 3, 2)
    # layer 1 (4,4,4)->(8,8,4) r=2: 1*4*8*2 + 2*4*8*2 + 2*4*4*1 = 64+128+32 = 224, bias 256
    # layer 2 (8,8,4)->(8,8,4) r=2: 1*8*8*2 + 2*8*8*2 + 2*4*4 = 128+256+32 = 416, bias 256; output 256*10+10
    assert count_parameters(net, trainable_only=False) == 224 + 256 + 416 + 256 + 2570
    tts = [m for m in net if isinstance(m, TTLinear)]
    assert tz.net_flops(net) == tts[0].flops() + tts[1].flops() + 2560
    # layer 1 flops: 1*(16)*1*4*8*2 + 8*4*2*4*8*2 + 64*1*2*4*4*1 = 1024 + 4096 + 2048
    assert tts[0].flops() == 1024 + 4096 + 2048
    dense = MLP(64, [256, 256], 10)
    assert tz.net_flops(dense) == 64 * 256 + 256 * 256 + 2560
    assert count_parameters(dense, trainable_only=False) == 64 * 256 + 256 + 256 * 256 + 256 + 2570


def test_compress_mlp_at_full_rank_is_the_dense_net():
    torch.manual_seed(0)
    dense = MLP(12, [24, 24], 5).double()
    comp = tz.compress_mlp(dense, 2, 10**6)
    x = torch.randn(7, 12, dtype=torch.float64)
    torch.testing.assert_close(comp(x), dense(x), rtol=1e-10, atol=1e-10)
    low = tz.compress_mlp(dense, 2, 1)
    assert all(t.ranks == [1, 1, 1] for t in low if isinstance(t, TTLinear))
    assert count_parameters(low, trainable_only=False) < count_parameters(dense, trainable_only=False)


def _synthetic(scratch, svd, ft, dense=0.97, ranks=(1, 2, 4, 8), params=(3000, 4000, 5000, 10000), seeds=2):
    cfg = _cfg(ranks=",".join(map(str, ranks)))
    R = len(ranks)
    acc = np.stack([np.repeat(np.asarray(v, float)[:, None], seeds, 1) for v in (scratch, svd, ft)])
    times = np.ones((R, 3))
    return tz.summarize(cfg, np.full(seeds, dense), acc, np.asarray(params), np.full(R, 20000), 85000, 84000,
                        np.full((R, seeds), 0.9), (1.0, 1.0, 1.0), times)


def test_checks_pass_on_the_published_shape():
    r = _synthetic(scratch=[0.90, 0.955, 0.97, 0.975], svd=[0.1, 0.1, 0.4, 0.9], ft=[0.8, 0.9, 0.95, 0.96])
    v = _verdicts(r)
    assert all(v.values()), r.checks
    assert r.metrics["best_rank"] == 2  # the most compressed rank within 2 points (r=1 loses 7)
    assert "tensorized" in r.figures


def test_compression_check_fails_when_accuracy_is_lost_or_compression_small():
    lossy = _synthetic(scratch=[0.80, 0.90, 0.92, 0.94], svd=[0.1] * 4, ft=[0.9] * 4)
    assert not _verdicts(lossy)["large compression at a small accuracy loss (TT trained from scratch)"]
    # accurate, but no rank compresses 5x (85000 / 20000 = 4.25x)
    small = _synthetic(scratch=[0.97] * 4, svd=[0.1] * 4, ft=[0.9] * 4, params=(20000,) * 4)
    assert not _verdicts(small)["large compression at a small accuracy loss (TT trained from scratch)"]


def test_finetune_check_fails_without_recovery_or_without_loss():
    name = "fine-tuning recovers the accuracy plain TT-SVD loses at low rank"
    stuck = _synthetic(scratch=[0.96] * 4, svd=[0.1, 0.2, 0.5, 0.9], ft=[0.15, 0.5, 0.8, 0.95])
    assert not _verdicts(stuck)[name]     # r=1: wins back 0.05 of 0.87
    nothing_lost = _synthetic(scratch=[0.96] * 4, svd=[0.96] * 4, ft=[0.97] * 4)
    assert not _verdicts(nothing_lost)[name]


def test_tiny_run():
    cfg = _cfg(n_train=150, n_test=100, width=16, modes=2, ranks="1,2", epochs=2, finetune_epochs=1, time_reps=1,
               batch_size=50)
    result = tz.run(cfg, RunContext())
    assert result.arrays["accuracy"].shape == (3, 2, 1)
    assert len(result.checks) == 2
    m = result.metrics
    assert m["tt_ranks"] == [[[1, 1, 1], [1, 1, 1]], [[1, 2, 1], [1, 2, 1]]]
    assert all(math.isfinite(x) and x > 0 for x in m["train_speed_ratio"] + m["inference_speed_ratio"])
    assert m["param_compression"][0] > m["param_compression"][1] > 1
    # the TT-SVD error shrinks with the rank
    assert m["ttsvd_relative_weight_error"][0] >= m["ttsvd_relative_weight_error"][1]


def test_dense_input_layer_option():
    assert tz.hidden_modes(40, 64, 2, 2, tt_input=False) == [None, ([8, 8], [8, 8])]
    net = tz.tt_mlp(40, 64, 2, 10, 2, 3, tt_input=False)
    assert isinstance(net[0], nn.Linear) and isinstance(net[2], TTLinear)
    dense = MLP(40, [64, 64], 10).double()
    comp = tz.compress_mlp(dense, 2, 10**6, tt_input=False)
    assert isinstance(comp[0], nn.Linear) and isinstance(comp[2], TTLinear)
    x = torch.randn(5, 40, dtype=torch.float64)
    torch.testing.assert_close(comp(x), dense(x), rtol=1e-10, atol=1e-10)
