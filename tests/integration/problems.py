"""The small tuning problems the integration tests build from generated sets."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from envs.evaluator import MetricConfig
from envs.events import ClassEvents
from envs.groundtruth import write_durations, write_ground_truth
from envs.importers import import_numpy
from envs.params import ClassParams
from envs.problem import DataRef, TuningProblem
from envs.space import SearchSpace
from envs.synth import SynthResult


def synth_problem(synth: SynthResult, space: SearchSpace, manual: ClassParams) -> TuningProblem:
    """Every clip of a generated set as tuning clips, ``manual`` for every class, 3 folds."""
    ref = DataRef(synth.scores_uri, synth.ground_truth_path, synth.durations_path, clips=None)
    manuals = {c: manual for c in synth.classes}
    return TuningProblem(ref, ref.load(), space, MetricConfig(), manuals, n_folds=3, seed=0)


#: The classes of :func:`decoder_set`: the ``boxes`` decoder suits the first, ``frames`` the second.
DECODER_CLASSES = ("Chatter", "Train")
#: Frame hop (seconds) and frames per clip of :func:`decoder_set`.
DECODER_HOP_S, DECODER_FRAMES = 0.1, 100


@dataclass(frozen=True)
class DecoderSet:
    """A generated set on which each class has its own best decoder.

    Attributes:
        ref: Where it lives (all clips).
        classes: :data:`DECODER_CLASSES`.
    """

    ref: DataRef
    classes: tuple[str, ...] = DECODER_CLASSES


def decoder_set(root: str, n_clips: int = 30, seed: int = 0, clips_per_shard: int = 10) -> DecoderSet:
    """Write a set (hop 0.1 s, 10 s clips) where the decoder choice decides a class's F.

    - ``Chatter``: 1-2 events of 1.5-3.5 s per clip whose scores alternate frame by frame
      between about 0.95 and 0.55. Every odd median filter keeps a period-2 alternation, so
      the ``frames`` decoder cuts each event into one-frame pieces at any threshold in
      (0.57, 0.93) (F 0). The ``boxes`` decoder merges the pieces across their shallow dips
      (relative criterion 2) into one box per event of confidence about 0.75, which
      matches it (F 1 for box thresholds up to about 0.72).
    - ``Train``: trains of 3-5 clean events of 0.4-0.6 s, 0.4-0.6 s apart, at 0.95-0.97.
      The ``frames`` decoder finds each at any threshold below 0.95 (F 1); a step filter
      much longer than the events (1.6 s and more) blurs a train (F below 0.8).

    Scores outside events are at most 0.03.
    """
    rng = np.random.default_rng(seed)
    n, hop = DECODER_FRAMES, DECODER_HOP_S
    scores = rng.uniform(0.0, 0.03, (n_clips, n, 2))
    events: dict[str, list[tuple[int, float, float]]] = {c: [] for c in DECODER_CLASSES}
    for clip in range(n_clips):
        start = int(rng.integers(3, 15))
        for _ in range(int(rng.integers(1, 3))):
            length = int(rng.integers(15, 36))
            if start + length > n - 3:
                break
            scores[clip, start : start + length, 0] = np.where(np.arange(length) % 2 == 0, 0.95, 0.55)
            scores[clip, start : start + length, 0] += rng.uniform(-0.02, 0.02, length)
            events["Chatter"].append((clip, start * hop, (start + length) * hop))
            start += length + int(rng.integers(10, 25))
        start = int(rng.integers(3, 40))
        for _ in range(int(rng.integers(3, 6))):
            length = int(rng.integers(4, 7))
            if start + length > n - 3:
                break
            scores[clip, start : start + length, 1] = rng.uniform(0.95, 0.97)
            events["Train"].append((clip, start * hop, (start + length) * hop))
            start += length + int(rng.integers(4, 7))
    names = [f"clip{i:03d}.wav" for i in range(n_clips)]
    scores_uri = os.path.join(root, "scores")
    import_numpy(scores_uri, scores.astype(np.float32), names, DECODER_CLASSES, hop, clips_per_shard)
    gt, dur = os.path.join(root, "ground_truth.tsv"), os.path.join(root, "durations.tsv")
    refs = {c: ClassEvents.from_lists(*zip(*ev, strict=True)) for c, ev in events.items()}
    write_ground_truth(gt, names, refs)
    write_durations(dur, {name: n * hop for name in names})
    return DecoderSet(DataRef(scores_uri, gt, dur))


def decoder_problem(dset: DecoderSet, space: SearchSpace, manual: ClassParams) -> TuningProblem:
    """Every clip of a :func:`decoder_set` as tuning clips, ``manual`` for every class, 3 folds."""
    return TuningProblem(dset.ref, dset.ref.load(), space, MetricConfig(), {c: manual for c in dset.classes},
                         n_folds=3, seed=0)
