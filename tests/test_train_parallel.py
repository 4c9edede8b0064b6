"""Training on several cores: split ensembles and width groups give the one-core results."""

import numpy as np
import pytest
import torch

from overparam.models import MLP
from overparam.train import TrainConfig, train_ensemble
from overparam.train.parallel import CORES_ENV, ThreadTuner, available_cores, run_jobs
from overparam.train.widths import train_mlp_widths


def _data(n=60, d=6, c=3):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


def test_run_jobs_keeps_job_order_and_restores_torch_threads():
    before = torch.get_num_threads()
    seen = []
    jobs = [lambda i=i: (seen.append(torch.get_num_threads()), i * i)[1] for i in range(5)]
    assert run_jobs(jobs, workers=2, costs=[1, 5, 2, 4, 3]) == [0, 1, 4, 9, 16]
    assert set(seen) == {1} and torch.get_num_threads() == before


def test_available_cores_reads_the_environment(monkeypatch):
    monkeypatch.setenv(CORES_ENV, "3")
    assert available_cores() == 3
    monkeypatch.setenv(CORES_ENV, "many")
    with pytest.raises(ValueError, match=CORES_ENV):
        available_cores()


@pytest.mark.parametrize("own_order", [False, True])
def test_ensemble_on_two_threads_equals_one_thread(own_order):
    X, y = _data()
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, epochs=3, dtype="float64", seed=4)
    seeds = list(range(5))
    data_seeds = [100 + s for s in seeds] if own_order else None
    build = lambda: MLP(6, [8, 8], 3)  # noqa: E731
    one, h1 = train_ensemble(build, seeds, X, y, cfg, X, y, 3, data_seeds=data_seeds)
    two, h2 = train_ensemble(build, seeds, X, y, cfg, X, y, 3, data_seeds=data_seeds, workers=2)
    assert two.size == 5
    for key in ("train_loss", "test_error"):
        np.testing.assert_allclose(h2.curves(key), h1.curves(key), rtol=1e-12, atol=0)
    for k in one.params:
        torch.testing.assert_close(two.params[k], one.params[k], rtol=1e-12, atol=1e-14)
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(two.forward(x), one.forward(x), rtol=1e-12, atol=1e-14)


def test_width_groups_on_two_workers_equal_one_worker():
    X, y = _data()
    cfg = TrainConfig(optimizer="adam", lr=0.01, batch_size=20, epochs=2, dtype="float64")
    widths, seeds = [2, 5, 9, 12], {2: [0], 5: [1], 9: [2], 12: [3]}
    groups = [[2, 5], [9], [12]]
    one = train_mlp_widths(6, widths, 3, seeds, X, y, cfg, X, y, 3, groups=groups)
    two = train_mlp_widths(6, widths, 3, seeds, X, y, cfg, X, y, 3, groups=groups, workers=2)
    # float64; not bitwise: MKL may pick another kernel for differently aligned buffers
    for h in widths:
        np.testing.assert_allclose(two[h].history.curves("train_loss"), one[h].history.curves("train_loss"),
                                   rtol=1e-12)
        for p, q in zip(two[h].models[0].parameters(), one[h].models[0].parameters()):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_threads_never_share_the_global_generator():
    """Width groups trained on two workers give the same models run after run (the global RNG is untouched)."""
    X, y = _data()
    cfg = TrainConfig(optimizer="sgd", lr=0.05, batch_size=20, epochs=1, dtype="float64")
    widths, seeds = [3, 6, 9, 12], {3: [0], 6: [1], 9: [2], 12: [3]}
    runs = [train_mlp_widths(6, widths, 3, seeds, X, y, cfg, groups=[[3], [6], [9], [12]], workers=2)
            for _ in range(3)]
    for h in widths:
        for other in runs[1:]:
            torch.testing.assert_close(other[h].models[0].net[0].weight, runs[0][h].models[0].net[0].weight,
                                       rtol=1e-12, atol=1e-14)


def test_width_groups_in_worker_processes_equal_one_worker():
    X, y = _data()
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=20, epochs=2, dtype="float64")
    widths, seeds = [2, 5, 9], {2: [0, 1], 5: [2, 3], 9: [4, 5]}
    groups = [[2, 5], [9]]
    one = train_mlp_widths(6, widths, 3, seeds, X, y, cfg, X, y, 3, groups=groups)
    two = train_mlp_widths(6, widths, 3, seeds, X, y, cfg, X, y, 3, groups=groups, workers=2, processes=True)
    for h in widths:
        np.testing.assert_allclose(two[h].history.curves("test_loss"), one[h].history.curves("test_loss"), rtol=1e-12)
        for r in range(2):
            for p, q in zip(two[h].models[r].parameters(), one[h].models[r].parameters()):
                torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


class _FakeClock:
    """A clock under which a step takes ``cost[threads]`` seconds."""

    def __init__(self, cost):
        self.cost, self.now = cost, 0.0

    def __call__(self):
        return self.now

    def run(self, tuner, steps, start=0):
        used = []
        for i in range(start, start + steps):
            with tuner.step(i):
                used.append(torch.get_num_threads())
                self.now += self.cost[torch.get_num_threads()]
        return used


@pytest.mark.parametrize("cost, settled", [({2: 1.0, 1: 1.5}, 2),     # idle cores: two threads win
                                           ({2: 3.0, 1: 1.0}, 1)])    # busy machine: one thread wins
def test_thread_tuner_keeps_the_faster_setting(cost, settled):
    before = torch.get_num_threads()
    clock = _FakeClock(cost)
    with ThreadTuner(2, window=3, every=20, clock=clock) as tuner:
        used = clock.run(tuner, 40)
    assert torch.get_num_threads() == before
    assert used[:6] == [2] * 6 and used[6:9] == [1] * 3          # warm-up, time 2 threads, time 1 thread
    assert set(used[9:20]) == {settled} and tuner.history == [settled, settled]
    assert used[23:26] == [2] * 3 and used[26:29] == [1] * 3      # measured again after `every` steps


def test_thread_tuner_follows_a_change_of_load():
    clock = _FakeClock({2: 1.0, 1: 1.5})
    with ThreadTuner(2, window=2, every=10, clock=clock) as tuner:
        clock.run(tuner, 10)
        clock.cost = {2: 4.0, 1: 1.5}                                 # the machine got busy
        used = clock.run(tuner, 20, start=10)                         # steps 10..29
    assert tuner.history == [2, 1, 1] and set(used[6:10]) == {1} and set(used[16:20]) == {1}


def test_one_worker_leaves_torch_threads_alone():
    before = torch.get_num_threads()
    with ThreadTuner(1) as tuner:
        for i in range(30):
            with tuner.step(i):
                assert torch.get_num_threads() == before
