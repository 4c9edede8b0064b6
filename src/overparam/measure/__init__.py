"""Instruments: pure functions of (model, loss, data) returning result dataclasses."""

from overparam.measure.data import count_examples, iter_batches
from overparam.measure.hessian import (CurvatureError, GaussNewtonOperator, HessianDensity, HessianEigs,
                                       HessianIndex, HessianOperator, HessianTrace, ResidualOperator,
                                       hessian_density, hessian_eigs, hessian_index, hessian_trace)

__all__ = ["iter_batches", "count_examples", "CurvatureError", "GaussNewtonOperator", "HessianDensity",
           "HessianEigs", "HessianIndex", "HessianOperator", "HessianTrace", "ResidualOperator",
           "hessian_density", "hessian_eigs", "hessian_index", "hessian_trace"]
