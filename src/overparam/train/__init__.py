"""Training: one loop (SGD, momentum, Adam, full-batch GD) and progress reporting."""

from overparam.train.loop import Diverged, History, TrainConfig, evaluate, loss_function, train
from overparam.train.progress import SILENT, Progress

__all__ = ["Diverged", "TrainConfig", "History", "train", "evaluate", "loss_function", "Progress", "SILENT"]
