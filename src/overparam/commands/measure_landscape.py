"""`overparam measure landscape`: a 1-D or 2-D slice of the loss landscape around your model (Li et al. 2018).

    overparam measure landscape --model mynet.py:build --weights net.pt --data train.npz --dims 2 --out land.png --json

L(theta + a d1) or L(theta + a d1 + b d2) on a ``--steps`` (x ``--steps``) grid over [-span, span], along
filter-normalized Gaussian directions (every row of a Linear weight, every output channel of a Conv weight rescaled
to the norm of the matching filter of the weights; biases and BatchNorm parameters left out), or raw Gaussian
directions (``--directions random``); see :mod:`overparam.measure.landscape`. ``--out FILE.png`` saves the plot;
``--json`` prints the grid (alphas, betas, loss[alpha][beta], error).
"""

from __future__ import annotations

from overparam.commands.argtypes import float_in, positive_int, seed_int
from overparam.commands.usermodel_args import (add_model_args, check_memory, check_out_path, load_inputs, measuring,
                                               print_json, save_figure, threads)

NAME = "landscape"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(NAME, help="1-D or 2-D filter-normalized loss landscape of your model (a figure)")
    add_model_args(p)
    p.add_argument("--dims", type=int, default=1, choices=(1, 2), help="a line (1, default) or a plane (2)")
    p.add_argument("--directions", default="filter-normalized", choices=("filter-normalized", "random"))
    p.add_argument("--span", type=float_in(0, 1000, low_open=True), default=1.0,
                   help="grid over [-span, span] (default 1)")
    p.add_argument("--steps", type=positive_int, default=21, help="grid points per axis (default 21)")
    p.add_argument("--ignore", default="biasbn", choices=("biasbn", "none"),
                   help="biasbn: no move along biases and BatchNorm parameters (Li et al.'s default); none: move "
                        "them along themselves, as their code does")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the random directions")
    p.add_argument("--log", action="store_true", help="contour log10(loss) in the 2-D figure")
    p.add_argument("--out", metavar="FILE.png", help="save the figure (.png, .pdf or .svg)")


def run(args, store) -> int:
    import torch

    from overparam.measure.landscape import landscape
    from overparam.models import count_parameters
    from overparam.usermodel import UserModelError

    if args.steps < 2:
        raise UserModelError(f"--steps must be >= 2, got {args.steps}")
    points = args.steps ** args.dims   # the loss and error grids, float64, and the figure's copies of them
    check_memory(4 * 8 * points, f"--steps {args.steps} with --dims {args.dims} ({points:.3g} grid points)")
    if args.out:  # fail on a bad path before a long computation
        check_out_path(args.out)
    model, X, y = load_inputs(args)
    check_memory(8 * (args.dims + 2) * count_parameters(model), f"--dims {args.dims} directions")
    with measuring("the landscape"):
        res = landscape(model, args.loss, (X, y), dims=args.dims, directions=args.directions, span=args.span,
                        steps=args.steps, seed=args.seed, ignore=None if args.ignore == "none" else "biasbn",
                        dtype=getattr(torch, args.dtype), batch_size=args.batch_size,
                        num_threads=threads(args, model))
    figure = save_figure(res.plot(log=args.log), args.out) if args.out else None
    i_min = divmod(int(res.loss.argmin()), args.steps) if args.dims == 2 else (int(res.loss.argmin()),)
    result = {
        "model": args.model, "weights": args.weights, "data": args.data, "loss_fn": args.loss, "dtype": args.dtype,
        "n_params": count_parameters(model), "n_examples": int(len(X)),
        "dims": res.dims, "directions": res.kind, "ignore": args.ignore, "span": args.span, "steps": args.steps,
        "seed": args.seed, "center_loss": res.center_loss, "min_loss": float(res.loss.min()),
        "max_loss": float(res.loss.max()), "argmin": [float(res.alphas[i_min[0]])]
        + ([float(res.betas[i_min[1]])] if args.dims == 2 else []),
        "direction_norms": [float((d ** 2).sum() ** 0.5) for d in res.directions],
        "alphas": res.alphas, "betas": res.betas, "loss": res.loss, "error": res.error,
        "n_loss_evals": res.n_loss_evals, "seconds": res.seconds, "figure": figure,
    }
    if args.json:
        print_json(result)
        return 0
    grid = f"{args.steps}" + (f" x {args.steps}" if args.dims == 2 else "")
    print(f"{args.dims}-D landscape ({res.kind} directions, span {args.span:g}, {grid} grid): "
          f"{result['n_params']} parameters, {len(X)} examples, {res.seconds:.2f} s")
    print(f"loss at the center {res.center_loss:.6g}; over the grid min {result['min_loss']:.6g} "
          f"(at {', '.join(f'{v:.3g}' for v in result['argmin'])}), max {result['max_loss']:.6g}")
    if args.dims == 1:
        print("   alpha        loss       error")
        for a, l_, e in zip(res.alphas, res.loss, res.error):
            print(f"  {a:6.3f}  {l_:10.6g}  {e:10.4g}")
    if figure:
        print(f"figure: {figure}")
    elif args.dims == 2:
        print("(--out FILE.png saves the contour plot; --json prints the grid)")
    return 0
