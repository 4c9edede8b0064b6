"""overparam: a laboratory for the science of over-parameterized neural networks."""

__version__ = "0.1.0"
