"""`overparam measure generalization`: Jiang et al. 2019's generalization measures of your MLP on its training data.

    overparam measure generalization --model mynet.py:build --weights net.pt --data train.npz --init init.pt --json

Norms (Frobenius, spectral, their products and sums), the path norm, the output margin and the margin-normalized
measures, and the sharpness-based PAC-Bayes measures (see :mod:`overparam.measure.generalization`).
``--init FILE`` (the weights at initialization, same factory) adds the distance measures. Models: chains of
nn.Linear layers with ReLU-like activations; margins need integer class labels.
"""

from __future__ import annotations

from overparam.commands.argtypes import float_in, positive_int, seed_int
from overparam.commands.usermodel_args import (add_model_args, load_inputs, load_model_quiet, measuring,
                                               print_json, threads)

NAME = "generalization"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(NAME, help="norm, margin, path-norm and PAC-Bayes generalization measures of your MLP")
    add_model_args(p, data_help=".npz of the TRAINING data: X and integer labels y (or X_train, y_train)")
    p.add_argument("--init", metavar="FILE", help="state_dict at initialization (adds the distance measures)")
    p.add_argument("--no-pacbayes", action="store_true", help="skip the PAC-Bayes sigmas (the slow part)")
    p.add_argument("--tolerance", type=float_in(0, 1000, low_open=True), default=0.1,
                   help="PAC-Bayes: allowed rise of the mean loss under noise (default 0.1)")
    p.add_argument("--samples", type=positive_int, default=10, help="PAC-Bayes Monte Carlo samples (default 10)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the PAC-Bayes noise")


def run(args, store) -> int:
    import numpy as np
    import torch

    from overparam.measure.generalization import generalization_measures, linear_layers
    from overparam.usermodel import UserModelError, check_forward

    model, X, y = load_inputs(args)
    if torch.is_floating_point(y):
        raise UserModelError("generalization measures need integer class labels in y (the margin is defined "
                             "for classification)")
    try:
        linear_layers(model)
    except ValueError as exc:
        raise UserModelError(str(exc)) from None
    init = None
    if args.init:
        init = load_model_quiet(args.model, args.init, flag="--init")
        check_forward(init, X)
    with measuring("the generalization measures"):
        g = generalization_measures(model, (X, y), loss_fn=args.loss, init_model=init,
                                    pacbayes=not args.no_pacbayes,
                                    pacbayes_kw={"tolerance": args.tolerance, "n_samples": args.samples,
                                                 "seed": args.seed},
                                    batch_size=args.batch_size, dtype=getattr(torch, args.dtype),
                                    num_threads=threads(args, model))
    m = g.margins
    result = {
        "model": args.model, "weights": args.weights, "init": args.init, "data": args.data, "loss_fn": args.loss,
        "dtype": args.dtype, "n_params": g.n_params, "n_layers": g.n_layers, "n_examples": g.n_examples,
        "measures": g.measures,
        "margin_quantiles": {"min": float(m.min()), "p10": float(np.sort(m)[max(len(m) // 10, 1) - 1]),
                             "median": float(np.median(m)), "max": float(m.max())},
        "fraction_fitted": float((m > 0).mean()),
        "pacbayes_sigma": None if g.sigma is None else g.sigma.sigma,
        "pacbayes_mag_sigma": None if g.mag_sigma is None else g.mag_sigma.sigma,
        "seconds": g.seconds,
    }
    if args.json:
        print_json(result)
        return 0
    print(f"generalization measures (Jiang et al. 2019) of a {g.n_layers}-layer MLP: {g.n_params} parameters, "
          f"{g.n_examples} training examples, {result['fraction_fitted']:.1%} with a positive margin, "
          f"{g.seconds:.2f} s")
    if not g.measures["margin"] > 0:
        print("(the 10th-percentile margin is not positive: the margin-normalized measures are undefined)")
    for k, v in g.measures.items():
        print(f"  {k:<32} {v: .6g}")
    return 0
