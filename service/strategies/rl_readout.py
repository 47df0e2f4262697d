"""The rl strategy's static read-out: a per-class table from a greedy policy's actions.

After every training iteration the greedy policy acts on every tuning clip; per class, of the
``static_top_k`` settings it picks most often, the one with the best tuning F is the table
(:func:`static_table`). Every per-class setting is evaluated once (:class:`CountCache`), which
costs ``1 / C`` full-set evaluations for C classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from envs.action_grid import ActionGrid
from envs.params import ClassParams
from envs.problem import TuningProblem, macro_from_counts
from envs.selection import Candidate

I64 = npt.NDArray[np.int64]


def ranked_choices(
    actions: I64, grid: ActionGrid, classes: Sequence[str], top_k: int
) -> dict[str, list[ClassParams]]:
    """Per class, the ``top_k`` settings the actions pick most often (most frequent first).

    Args:
        actions: Greedy actions of the tuning clips, (n_clips, len(nvec)).
        grid: The action grid.
        classes: Class order of the actions.
        top_k: How many settings per class.
    """
    setting, thr = grid.split(actions)
    out = {}
    for j, c in enumerate(classes):
        pairs, counts = np.unique(np.stack([setting[:, j], thr[:, j]], axis=1), axis=0, return_counts=True)
        order = np.argsort(-counts, kind="stable")[:top_k]
        out[c] = [grid.class_params(int(pairs[i, 0]), int(pairs[i, 1])) for i in order]
    return out


class CountCache:
    """Per-fold counts of the per-class settings evaluated so far (each evaluated once).

    Evaluating one class's setting on every tuning clip costs ``1 / C`` full-set evaluations.

    Args:
        problem: The tuning problem (its evaluator and folds).
    """

    def __init__(self, problem: TuningProblem) -> None:
        self.problem = problem
        self.counts: dict[str, dict[ClassParams, I64]] = {c: {} for c in problem.classes}

    def get(self, label: str, params: ClassParams) -> I64:
        """Counts (n_folds, 3) of one class's setting, evaluated on first use."""
        known = self.counts[label]
        if params not in known:
            p = self.problem
            known[params] = p.evaluator.class_counts_by_group(label, params, p.folds, p.n_folds)
        return known[params]

    @property
    def evaluations(self) -> float:
        """Full-set evaluations spent on the settings in the cache."""
        return sum(len(v) for v in self.counts.values()) / len(self.counts)

    def candidates(self) -> dict[str, list[Candidate]]:
        """Every evaluated setting per class, with its fold counts."""
        return {c: [Candidate(p, n) for p, n in v.items()] for c, v in self.counts.items()}


def static_table(
    actions: I64, grid: ActionGrid, classes: Sequence[str], cache: CountCache, top_k: int
) -> tuple[dict[str, ClassParams], float, float]:
    """The static read-out of a greedy policy on the tuning clips.

    Per class, among the ``top_k`` settings the policy picks most often, the one with the
    best tuning F (the more frequent on ties); ``top_k = 1`` is the plain mode. A
    clip-adaptive policy switches a class off on clips where it hears nothing of it, so for
    a rare class the mode is an "off" setting; the runner-up settings are the ones it uses
    where the class occurs.

    Returns:
        The table, its tuning macro F and the tuning macro F of the plain mode table.
    """
    from envs.metrics.fscore import f_measure

    table: dict[str, ClassParams] = {}
    picked: dict[str, I64] = {}
    mode: dict[str, I64] = {}
    for c, options in ranked_choices(actions, grid, classes, top_k).items():
        counts = [cache.get(c, p) for p in options]
        tot = np.stack([n.sum(axis=0) for n in counts])
        f = np.nan_to_num(f_measure(tot[:, 0], tot[:, 1], tot[:, 2]), nan=-1.0)
        i = int(np.argmax(f))
        table[c], picked[c], mode[c] = options[i], counts[i], counts[0]
    return table, macro_from_counts(picked), macro_from_counts(mode)
