"""Tuning commands: ``tune`` (run a job spec) and ``demo`` (generated data, every strategy)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Any

from service.commands.bars import progress_bar
from service.commands.live import budget_text

if TYPE_CHECKING:
    from service.tuning.spec import JobSpec

LOG = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the tuning commands to the CLI."""
    p = sub.add_parser("tune", help="run a tuning job (local Ray, or a cluster with --address)")
    p.add_argument("spec", help="job spec (YAML or JSON)")
    p.add_argument(
        "--address", help="Ray address (ray://host:10001, host:6379 or 'auto'); default: local Ray"
    )
    p.add_argument("--output", help="output directory (overrides the spec); must be empty or new")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a non-empty output directory (only when the new results are complete)",
    )
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    _verbose(p)
    p.set_defaults(handler=run_tune)

    p = sub.add_parser("demo", help="generate a set, tune it with every strategy, print the comparison")
    p.add_argument("--out", default="sedtune-demo", help="working directory (data and results)")
    p.add_argument("--clips", type=int, default=300, help="clips to generate")
    p.add_argument("--classes", type=int, default=6, help="classes to generate")
    p.add_argument("--budget", type=float, default=40, help="evaluations per searching strategy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    _verbose(p)
    p.set_defaults(handler=run_demo)


def _verbose(p: argparse.ArgumentParser) -> None:
    """``-v/--verbose`` after the command too (``sedtune demo --verbose``), as before it."""
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,  # not given here: the global flag's value stands
        help="also show the run's log (Ray, Tune, RLlib, Optuna) live on stderr",
    )


def execute(
    spec: JobSpec,
    address: str | None,
    tracking: bool,
    as_json: bool,
    force: bool = False,
    verbose: bool = False,
    header: str | None = None,
) -> int:
    """Run the pipeline with the live display, then print the comparison; shared by ``tune`` and ``demo``.

    The terminal gets sedtune's own lines only (``header``, the log's path, a line per
    strategy run, the comparison, the results and tracking lines): everything else the run
    writes, Ray's and the libraries' output included, goes to ``<output>/sedtune.log``
    (:mod:`service.commands.runlog`; ``verbose`` shows it live too). With ``as_json``, stdout
    carries the comparison's JSON only.

    The run happens in a staging folder renamed to the spec's output folder when complete; a
    non-empty output folder is refused unless ``force`` (:mod:`service.tuning.staging`).
    SIGINT or SIGTERM stop it with nothing written (``Interrupted``, exit 130 or 143 through
    :func:`service.cli.main`).
    """
    import json

    from service.commands.live import LiveReporter
    from service.commands.runlog import RunLog
    from service.tuning.interrupt import Interrupted
    from service.tuning.outputs import comparison_json, comparison_markdown
    from service.tuning.pipeline import run_pipeline

    log = RunLog(spec.with_absolute_paths().output_dir, verbose, info_to_err=as_json)
    with log as console:
        if header:
            console.out(header)
        reporter = LiveReporter(console, log.path)
        try:
            run = run_pipeline(spec, reporter, address=address, track=tracking, staged=True, force=force)
        except Interrupted as e:
            if e.note:  # stopped after the results were published (while tracking): the log joins them
                log.publish()
            raise
        finally:
            reporter.close()
        log.publish()
        result = run.result
        if as_json:
            console.out(json.dumps(comparison_json(result), indent=2))
        else:
            console.out(comparison_markdown(result))
            best = run.paths.get("best_params", "n/a")
            console.out(f"results: {result.output_dir} (best parameters: {best})")
        if run.tracking_line:
            (console.out if run.tracking is not None else console.err)(run.tracking_line)
    return 0


def run_tune(args: argparse.Namespace) -> int:
    """``sedtune tune SPEC``."""
    from service.tuning.interrupt import interruptible
    from service.tuning.spec import load_spec

    with interruptible():
        spec = load_spec(args.spec)
        if args.output:
            spec = spec.model_copy(update={"output": args.output})
        return execute(
            spec, args.address, not args.no_tracking, args.json, force=args.force, verbose=args.verbose
        )


def demo_spec(root: str, budget: float, seed: int) -> dict[str, Any]:
    """The demo's job spec over a generated set in ``root/data``."""
    root = os.path.abspath(root)
    data = os.path.join(root, "data")
    return {
        "name": "demo",
        "data": {
            "scores": os.path.join(data, "scores"),
            "ground_truth": os.path.join(data, "ground_truth.tsv"),
            "durations": os.path.join(data, "durations.tsv"),
        },
        "heldout": {"fraction": 0.5, "seed": seed},
        # Both decoders, small enough for a 40-evaluation budget (7 settings, 5 thresholds each).
        "space": {
            "kernels": [1, 5, 9],
            "threshold": {"low": 0.05, "high": 0.95},
            "boxes": {"step_filter_s": [0.32, 0.64], "merge": [{"abs": 0.2}, {"rel": 2.0}]},
        },
        "strategies": [
            {"name": "manual"},
            {"name": "exact", "budget": budget},
            {"name": "random", "budget": budget},
            {"name": "bayes", "budget": budget},
            # Smaller PPO batches than the default 4096 steps: the static table's sweep takes 35
            # of the 40 evaluations, and the rest (about 5 x 150 clips x 6 classes steps) would
            # be one iteration at the default; 1024 gives the residual policy several.
            {"name": "rl", "budget": budget, "options": {"train_batch_size": 1024, "minibatch_size": 128}},
        ],
        "folds": 4,
        "seed": seed,
        "output": os.path.join(root, "results"),
        "tracking": {"uri": f"sqlite:///{os.path.abspath(os.path.join(root, 'mlflow.db'))}"},
    }


def run_demo(args: argparse.Namespace) -> int:
    """``sedtune demo``: synth, tune with every strategy at a small budget, compare.

    The demo owns ``--out``: its generated set is reused, its ``results`` folder replaced by
    each complete run.
    """
    from service.tuning.interrupt import interruptible

    with interruptible():
        return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    from envs.synth import generate
    from envs.synth_config import SynthConfig
    from service.strategies.base import REGISTRY
    from service.tuning.spec import parse_spec

    data = os.path.join(args.out, "data")
    if not os.path.exists(os.path.join(data, "ground_truth.tsv")):
        with progress_bar(total=args.clips, desc="synth", unit="clip") as bar:
            generate(
                data,
                SynthConfig(n_clips=args.clips, n_classes=args.classes, seed=args.seed),
                progress=bar.update,
            )
    raw = demo_spec(args.out, args.budget, args.seed)
    available = [s for s in raw["strategies"] if _importable(REGISTRY[s["name"]])]
    raw["strategies"] = available
    spec = parse_spec(raw, "demo spec")
    header = (
        f"demo: {args.clips} generated clips x {args.classes} classes, strategies "
        f"{', '.join(s['name'] for s in available)}, budget {budget_text(args.budget)} evaluations each"
    )
    return execute(spec, None, not args.no_tracking, False, force=True, verbose=args.verbose, header=header)


def _importable(target: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(target.split(":")[0]) is not None
