"""Interventions the literature proposes: pruning with masks kept outside the weights, rewinding, controls."""

from overparam.interventions.prune import (apply_masks, dense_masks, enforce_masks, fit_masked_ensemble,
                                           fraction_remaining, iterative_magnitude_pruning, magnitude_prune,
                                           prunable_names, random_masks_like, random_prune, reinitialize, rewind,
                                           snapshot, stack_masks, train_masked)

__all__ = ["apply_masks", "dense_masks", "enforce_masks", "fit_masked_ensemble", "fraction_remaining",
           "iterative_magnitude_pruning", "magnitude_prune", "prunable_names", "random_masks_like", "random_prune",
           "reinitialize", "rewind", "snapshot", "stack_masks", "train_masked"]
