"""Training: the one loop (:func:`train`), the stacked-ensemble engine (:func:`fit_ensemble`, with its step
strategies), callbacks, per-replica hyperparameters, every-core helpers, stopping on signals, progress."""

from overparam.train.loop import (Callback, Diverged, History, StepInfo, TrainConfig, evaluate, loss_function,
                                  train)
from overparam.train.ensemble import (Ensemble, EnsembleHistory, PerReplica, evaluate_ensemble, fit_ensemble,
                                      train_ensemble)
from overparam.train.progress import SILENT, Progress
from overparam.train.stop import Interrupted

__all__ = ["Diverged", "TrainConfig", "History", "train", "evaluate", "loss_function", "Callback", "StepInfo",
           "Progress", "SILENT", "Ensemble", "EnsembleHistory", "PerReplica", "train_ensemble", "fit_ensemble",
           "evaluate_ensemble", "Interrupted"]
