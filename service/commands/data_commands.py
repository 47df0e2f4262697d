"""Data commands: ``synth``, ``import``, ``evaluate``, ``apply``."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

from envs.errors import SedtuneInputError
from envs.evalset import open_eval_set
from envs.evaluator import ClassResult, Evaluation, Evaluator, MetricConfig
from envs.metrics.counts import Counts
from envs.params import ClassParams, ParamFile, check_hop, load_params
from service.commands.bars import progress_bar


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the data commands to the CLI."""
    p = sub.add_parser("synth", help="generate a synthetic score set with ground truth")
    p.add_argument("out", help="output directory (scores/, ground_truth.tsv, durations.tsv)")
    p.add_argument("--clips", type=int, default=1000, help="number of clips")
    p.add_argument("--classes", type=int, default=10, help="number of classes")
    p.add_argument("--duration-s", type=float, default=10.0, help="clip duration (seconds)")
    p.add_argument("--hop-s", type=float, default=0.064, help="frame hop (seconds)")
    p.add_argument("--clips-per-shard", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=run_synth)

    p = sub.add_parser("import", help="convert a TSV folder or .npz into a score set")
    p.add_argument("source", help="folder of per-clip TSV files (sed_scores_eval) or an .npz file")
    p.add_argument("out", help="output score-set directory or URI")
    p.add_argument("--extension", default=".wav", help="appended to TSV clip names (default .wav)")
    p.add_argument("--clips-per-shard", type=int, default=2000)
    p.set_defaults(handler=run_import)

    p = sub.add_parser("evaluate", help="event-based F1 of a parameter setting")
    _data_args(p)
    _param_args(p)
    p.add_argument("--collar-s", type=float, default=0.2, help="t_collar (seconds)")
    p.add_argument("--pct-length", type=float, default=0.2, help="percentage_of_length")
    p.add_argument(
        "--evaluator",
        choices=("fast", "sed_eval"),
        default="fast",
        help="fast (default) or the sed_eval reference (slow)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=run_evaluate)

    p = sub.add_parser("apply", help="turn scores into a DCASE event TSV with a parameter file or RL policy")
    p.add_argument("--scores", required=True, help=_SCORES_HELP)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--params", help="parameter file (JSON)")
    src.add_argument("--policy", help="clip-adaptive RL policy (policy.pt from an rl strategy run)")
    p.add_argument("--durations", help="durations TSV (clip offsets to the clip end)")
    p.add_argument("--out", required=True, help="output TSV (filename onset offset event_label)")
    p.set_defaults(handler=run_apply)


_SCORES_HELP = "score set (Parquet folder or URI), sed_scores_eval TSV folder or .npz (cached)"


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scores", required=True, help=_SCORES_HELP)
    p.add_argument("--ground-truth", required=True, help="DCASE ground-truth TSV")
    p.add_argument("--durations", help="durations TSV")


def _param_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", help="parameter file (JSON); else the uniform setting below")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--median-filter-frames", type=int, default=1)
    p.add_argument("--threshold-off", type=float, default=None, help="hysteresis release")
    p.add_argument("--fill-gap-s", type=float, default=0.0)
    p.add_argument("--min-duration-s", type=float, default=0.0)


def _params(args: argparse.Namespace, classes: list[str], hop: float) -> ParamFile:
    if args.params:
        pf = load_params(args.params)
        pf.check_classes(classes, args.params)
        check_hop(pf, hop, args.params)
        return pf
    cp = ClassParams(
        median_filter_frames=args.median_filter_frames,
        threshold=args.threshold,
        threshold_off=args.threshold_off,
        fill_gap_s=args.fill_gap_s,
        min_duration_s=args.min_duration_s,
    ).validate("command line")
    return ParamFile.uniform(classes, hop, cp)


def run_synth(args: argparse.Namespace) -> int:
    """``sedtune synth``: the set appears in OUT only when complete (:func:`envs.synth.generate`).

    A set over :data:`envs.synth.MAX_CELLS` cells or the free disk space is refused before
    anything is written; SIGINT or SIGTERM stop it with nothing at OUT (exit 130 or 143).
    """
    from envs.synth import check_size, generate
    from envs.synth_config import SynthConfig
    from service.tuning.interrupt import interruptible

    cfg = SynthConfig(
        n_clips=args.clips,
        n_classes=args.classes,
        clip_duration_s=args.duration_s,
        frame_hop_s=args.hop_s,
        seed=args.seed,
        clips_per_shard=args.clips_per_shard,
    )
    check_size(args.out, cfg)
    with interruptible(), progress_bar(total=args.clips, desc="synth", unit="clip") as bar:
        res = generate(args.out, cfg, progress=bar.update)
    print(
        f"wrote {res.n_clips} clips x {len(res.classes)} classes ({res.n_events} events): "
        f"{res.scores_uri}, {res.ground_truth_path}, {res.durations_path}"
    )
    return 0


def run_import(args: argparse.Namespace) -> int:
    """``sedtune import``."""
    from envs.importers import import_npz, import_tsv_folder

    if args.source.endswith(".npz"):
        w = import_npz(args.source, args.out, args.clips_per_shard)
    elif os.path.isdir(args.source):
        n = len([f for f in os.listdir(args.source) if f.endswith(".tsv")])
        with progress_bar(total=n, desc="import", unit="clip") as bar:
            w = import_tsv_folder(args.source, args.out, args.extension, args.clips_per_shard, bar.update)
    else:
        raise SedtuneInputError(f"{args.source}: neither a directory of TSV files nor an .npz file")
    print(f"wrote {w.n_clips} clips x {len(w.classes)} classes in {w.n_shards} shard(s) to {args.out}")
    return 0


def evaluation_json(ev: Evaluation, seg: Evaluation | None) -> dict[str, Any]:
    """Evaluation as a JSON-ready dict (NaN as null)."""

    def num(x: float) -> float | None:
        return None if math.isnan(x) else x

    classes: dict[str, Any] = {}
    for c, r in ev.per_class.items():
        classes[c] = {
            "nref": r.counts.nref,
            "nsys": r.counts.nsys,
            "ntp": r.counts.ntp,
            "precision": num(r.precision),
            "recall": num(r.recall),
            "f_measure": num(r.f_measure),
        }
        if seg is not None:
            classes[c]["segment_f_measure"] = num(seg.per_class[c].f_measure)
    out: dict[str, Any] = {"macro_f_measure": num(ev.macro_f), "classes": classes}
    if seg is not None:
        out["segment_macro_f_measure"] = num(seg.macro_f)
    return out


def run_evaluate(args: argparse.Namespace) -> int:
    """``sedtune evaluate``."""
    with _conversion_bar():
        data = open_eval_set(args.scores, args.ground_truth, args.durations)
    params = _params(args, data.classes, data.frame_hop_s)
    metric = MetricConfig(t_collar_s=args.collar_s, percentage_of_length=args.pct_length)
    evaluator = Evaluator(data, metric)
    seg = evaluator.evaluate_segments(params.classes)
    if args.evaluator == "sed_eval":
        from envs.metrics.sed_eval_oracle import sed_eval_event_counts

        events = {c: evaluator.events(c, params.classes[c]) for c in data.classes}
        counts, _ = sed_eval_event_counts(
            data.filenames, data.classes, data.refs, events, metric.t_collar_s, metric.percentage_of_length
        )
        ev = Evaluation(
            {c: ClassResult.of(Counts(counts[c].nref, counts[c].nsys, counts[c].ntp)) for c in data.classes}
        )
    else:
        ev = evaluator.evaluate(params.classes)
    out = evaluation_json(ev, seg)
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'class':32s} {'Nref':>6s} {'Nsys':>6s} {'Ntp':>6s} {'P':>7s} {'R':>7s} {'F1':>7s} {'segF1':>7s}")
    for c, r in out["classes"].items():
        cells = [_fmt(r[k]) for k in ("precision", "recall", "f_measure", "segment_f_measure")]
        print(f"{c:32s} {r['nref']:6d} {r['nsys']:6d} {r['ntp']:6d} " + " ".join(cells))
    print(
        f"{'macro':32s} {'':6s} {'':6s} {'':6s} {'':7s} {'':7s} "
        f"{_fmt(out['macro_f_measure'])} {_fmt(out['segment_macro_f_measure'])}"
    )
    return 0


def _apply_policy(scores_uri: str, policy_path: str, out: str, durations_uri: str | None) -> int:
    """Decode with the clip-adaptive policy: each clip gets the policy's own per-class setting."""
    import numpy as np

    from envs.apply import write_events_tsv
    from envs.groundtruth import read_durations
    from envs.scoreset import ScoreSet

    if not os.path.exists(policy_path):
        raise SedtuneInputError(f"{policy_path}: policy file not found")
    from service.strategies.rl_policy import AdaptivePolicy

    try:
        policy = AdaptivePolicy.load(policy_path)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise SedtuneInputError(f"{policy_path}: not a sedtune RL policy ({type(e).__name__}: {e})") from None
    scores = ScoreSet.open(scores_uri)
    durations = read_durations(durations_uri) if durations_uri else None
    names = scores.filenames
    dur = np.array([durations.get(n, np.nan) for n in names]) if durations else None
    unknown = [c for c in policy.classes if c not in scores.classes]
    if unknown:
        raise SedtuneInputError(f"{policy_path}: policy class {unknown[0]!r} is not in {scores_uri}")
    cols = {c: scores.read_class(c) for c in policy.classes}
    try:
        events = policy.events_from_scores(cols, scores.frame_hop_s, dur)
    except ValueError as e:
        raise SedtuneInputError(f"{policy_path}: {e}") from None
    return write_events_tsv(out, names, events)


def _fmt(x: float | None) -> str:
    return f"{'nan':>7s}" if x is None else f"{x:7.4f}"


@contextlib.contextmanager
def _conversion_bar() -> Iterator[None]:
    """A bar while --scores (a TSV folder) is converted into the score cache.

    Drawn only after half a second, so a cache hit or a Parquet set shows nothing; cleared
    at the end of the block.
    """
    from envs.scorecache import conversion_progress

    desc = "converting scores (cached for later runs)"
    with progress_bar(desc=desc, unit="clip", leave=False, delay=0.5) as bar, conversion_progress(bar.update):
        yield


def run_apply(args: argparse.Namespace) -> int:
    """``sedtune apply``: scores + parameter file (or RL policy) -> DCASE event TSV."""
    if args.policy:
        with _conversion_bar():
            n = _apply_policy(args.scores, args.policy, args.out, args.durations)
        print(f"wrote {n} events to {args.out}")
        return 0
    from envs.apply import apply_to_tsv

    with _conversion_bar():
        n = apply_to_tsv(args.scores, args.params, args.out, args.durations)
    print(f"wrote {n} events to {args.out}")
    return 0
