"""`overparam measure ntk`: the empirical NTK of your own model on your own data, its spectrum and decay law.

    overparam measure ntk --model mypkg.nets:build --weights net.pt --data points.npz --n 500 --json
"""

from __future__ import annotations

import json

from overparam.commands.argtypes import positive_float, positive_int
from overparam.commands.usermodel_args import add_model_spec_args, check_memory, load_model_quiet, measuring

NAME = "ntk"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(NAME, help="empirical NTK Gram matrix, eigenvalues and decay fit of your model")
    add_model_spec_args(p)
    p.add_argument("--data", required=True, metavar="FILE", help=".npz with X (and y) or X_train (and y_train)")
    p.add_argument("--n", type=positive_int, default=1000, help="first n examples (default 1000)")
    p.add_argument("--mode", choices=("trace", "full"), default="trace",
                   help="trace: N x N kernel summed over outputs; full: (N*O) x (N*O)")
    p.add_argument("--method", choices=("auto", "jacobian", "ntk-vp"), default="auto",
                   help="Jacobian contraction or NTK-vector products; auto picks by estimated cost")
    p.add_argument("--block", type=positive_int, help="examples per block (default: from --memory-gb)")
    p.add_argument("--memory-gb", type=positive_float, default=2.0,
                   help="working memory for Jacobian blocks (GB, more than 0 and at most what is available)")
    p.add_argument("--float32", action="store_true", help="compute in float32 (default float64)")
    p.add_argument("--fit", default="2,", metavar="FIRST,LAST",
                   help="1-based eigenvalue range of the decay fits, e.g. 2,100 (default 2, to n/2)")
    p.add_argument("--top", type=positive_int, default=10, help="eigenvalues to print")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _fit_range(text: str) -> tuple[int, int | None]:
    from overparam.usermodel import UserModelError

    first, _, last = text.partition(",")
    try:
        fit = int(first), (int(last) if last.strip() else None)
    except ValueError:
        raise UserModelError(f"--fit must look like FIRST,LAST (e.g. 2,100) or FIRST, ; got {text[:40]!r}") from None
    if fit[0] < 1 or (fit[1] is not None and fit[1] < fit[0] + 2):
        raise UserModelError(f"--fit: need 1 <= FIRST and LAST >= FIRST + 2, got {text[:40]!r}")
    return fit


def run(args, store) -> int:
    import torch

    from overparam.measure.ntk import ntk_eigs
    from overparam.models import count_parameters
    from overparam.usermodel import UserModelError, check_forward, load_arrays

    fit = _fit_range(args.fit)
    X, _ = load_arrays(args.data, args.n, need_y=False)
    if len(X) < 4:
        raise UserModelError(f"--data: need at least 4 examples for a spectrum, got {len(X)}")
    model = load_model_quiet(args.model, args.weights, args.random_init)
    model.eval()
    outputs = check_forward(model, X)[0].numel()
    size = len(X) * (outputs if args.mode == "full" else 1)
    if fit[1] is not None and fit[1] > size:
        raise UserModelError(f"--fit: LAST {fit[1]} exceeds the kernel's {size} eigenvalues")
    memory = int(args.memory_gb * (1 << 30))
    check_memory(memory, f"--memory-gb {args.memory_gb:g}")
    check_memory(3 * 8 * size ** 2, f"the {size} x {size} kernel (--n {len(X)}, --mode {args.mode})")
    if args.block is not None:
        check_memory(8 * min(args.block, len(X)) * outputs * count_parameters(model), f"--block {args.block}")
    with measuring("the NTK"):
        spec = ntk_eigs(model, X, mode=args.mode, method=args.method, block=args.block, fit=fit,
                        dtype=torch.float32 if args.float32 else torch.float64, memory=memory)
    res, d = spec.ntk, spec.decay
    lam = spec.eigenvalues
    out = {
        "n": int(len(X)), "n_params": res.n_params, "n_outputs": res.n_outputs, "mode": res.mode,
        "method": res.method, "block": res.block, "blocks": res.blocks, "seconds": round(res.seconds, 4),
        "estimated_flops": {k: (float(v) if not isinstance(v, str) else v) for k, v in res.cost.items()},
        "trace": float(lam.sum()), "top_eigenvalues": [float(v) for v in lam[:args.top]],
        "decay": {k: (float(v) if isinstance(v, float) else v) for k, v in d.to_dict().items()},
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"NTK ({res.mode}) of {args.model} on {out['n']} examples: {res.n_params} parameters, "
          f"{res.n_outputs} outputs, method {res.method}, {res.blocks} blocks of {res.block}, {res.seconds:.2f}s")
    print("top eigenvalues: " + ", ".join(f"{v:.4g}" for v in out["top_eigenvalues"]))
    print(f"decay over i={d.first}..{d.last}: power law a={d.power_exponent:.3f} (R² {d.power_r2:.3f}), "
          f"exponential b={d.exp_rate:.4f} (R² {d.exp_r2:.3f}) -> {d.better} fits better")
    return 0
