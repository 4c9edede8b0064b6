"""Training: one loop (SGD, momentum, Adam, full-batch GD), the vmap ensemble engine (with its fused MLP step),
step hooks, every-core helpers, progress reporting."""

from overparam.train.loop import Diverged, History, TrainConfig, evaluate, loss_function, train
from overparam.train.ensemble import Ensemble, EnsembleHistory, evaluate_ensemble, train_ensemble
from overparam.train.progress import SILENT, Progress

__all__ = ["Diverged", "TrainConfig", "History", "train", "evaluate", "loss_function", "Progress", "SILENT",
           "Ensemble", "EnsembleHistory", "train_ensemble", "evaluate_ensemble"]
