"""Instruments: pure functions of (model, loss, data) returning result dataclasses."""

from overparam.measure.data import count_examples, iter_batches

__all__ = ["iter_batches", "count_examples"]
