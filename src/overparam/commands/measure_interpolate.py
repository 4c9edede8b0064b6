"""`overparam measure interpolate`: loss and error on the straight line between two of your solutions.

    overparam measure interpolate --model mynet.py:build --weights a.pt --weights-b b.pt --data train.npz --json

theta(alpha) = (1 - alpha) theta_a + alpha theta_b on a grid over [-extend, 1 + extend] containing 0 and 1, and
Frankle et al. 2020's barrier: the largest rise above the chord between the two ends, for the loss and the error
(Goodfellow et al. 2014; see :mod:`overparam.measure.interpolate`). ``--model-b`` defaults to ``--model``: the two
weight files are two trainings of one factory. ``--out line.png`` saves the plot.
"""

from __future__ import annotations

from overparam.commands.argtypes import float_in, positive_int
from overparam.commands.usermodel_args import (add_model_args, check_memory, check_out_path, check_targets,
                                               load_inputs, load_model_quiet, measuring, print_json, save_figure,
                                               threads)

NAME = "interpolate"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(NAME, help="loss and error along the line between two solutions; the barrier")
    add_model_args(p)
    p.add_argument("--model-b", metavar="SPEC", help="factory of the second model (default: --model)")
    p.add_argument("--weights-b", required=True, metavar="FILE", help="state_dict of the second model")
    p.add_argument("--steps", type=positive_int, default=21, help="grid points in [0, 1], ends included (default 21)")
    p.add_argument("--extend", type=float_in(0, 100), default=0.5,
                   help="continue the grid this far beyond each end (default 0.5; 0 stays between them; at most 100)")
    p.add_argument("--bn", default="interpolate", choices=("interpolate", "recompute"),
                   help="BatchNorm running statistics: interpolated, or recomputed at every alpha")
    p.add_argument("--out", metavar="FILE.png", help="save the plot (.png, .pdf or .svg)")


def run(args, store) -> int:
    import torch

    from overparam.measure.interpolate import interpolate
    from overparam.models import count_parameters
    from overparam.usermodel import UserModelError, check_forward

    if args.steps < 2:
        raise UserModelError(f"--steps must be >= 2 (both ends), got {args.steps}")
    points = args.steps + 2 * args.extend * (args.steps - 1)
    check_memory(4 * 8 * points, f"--steps {args.steps} with --extend {args.extend:g}")
    if args.out:  # fail on a bad path before a long computation
        check_out_path(args.out)
    model_a, X, y = load_inputs(args)
    spec_b = args.model_b or args.model
    model_b = load_model_quiet(spec_b, args.weights_b, flag="--weights-b")
    check_targets(args.loss, check_forward(model_b, X), y)
    with measuring("the interpolation"):
        res = interpolate(model_a, model_b, args.loss, (X, y), steps=args.steps, extend=args.extend, bn=args.bn,
                          dtype=getattr(torch, args.dtype), batch_size=args.batch_size,
                          num_threads=threads(args, model_a))
    figure = save_figure(res.plot(), args.out) if args.out else None
    i0, i1 = int(abs(res.alphas).argmin()), int(abs(res.alphas - 1).argmin())
    result = {
        "model": args.model, "weights": args.weights, "model_b": spec_b, "weights_b": args.weights_b,
        "data": args.data, "loss_fn": args.loss, "dtype": args.dtype, "bn": res.bn,
        "n_params": count_parameters(model_a), "n_examples": int(len(X)),
        "loss_a": float(res.loss[i0]), "loss_b": float(res.loss[i1]),
        "error_a": float(res.error[i0]), "error_b": float(res.error[i1]),
        "loss_barrier": res.loss_barrier, "error_barrier": res.error_barrier, "barrier_alpha": res.barrier_alpha,
        "distance": res.distance, "alphas": res.alphas, "loss": res.loss, "error": res.error,
        "n_loss_evals": res.n_loss_evals, "seconds": res.seconds, "figure": figure,
    }
    if args.json:
        print_json(result)
        return 0
    print(f"line from {args.weights or 'a fresh ' + args.model} (alpha 0) to {args.weights_b} (alpha 1): "
          f"{result['n_params']} parameters, {len(X)} examples, distance {res.distance:.4g}")
    print(f"loss at the ends {result['loss_a']:.6g} / {result['loss_b']:.6g}; barrier {res.loss_barrier:.6g} "
          f"at alpha {res.barrier_alpha:.3g}" + ("" if res.error_barrier != res.error_barrier
                                                 else f"; error barrier {res.error_barrier:.4g}"))
    print("   alpha        loss       error")
    for a, l_, e in zip(res.alphas, res.loss, res.error):
        print(f"  {a:6.3f}  {l_:10.6g}  {e:10.4g}")
    if figure:
        print(f"figure: {figure}")
    return 0
