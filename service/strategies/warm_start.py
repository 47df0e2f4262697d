"""Warm starts: per-class parameters, from a parameter file or inline, for every class of a problem.

The bayes strategy evaluates the manual setting and a warm start first (``include_manual``,
``warm_start`` of :class:`service.strategies.options.BayesOptions`); this module turns them
into parameters for every class of the problem (before they are snapped into the space).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from envs.errors import SedtuneInputError
from envs.params import ClassParams, check_hop, class_params_from_json, load_params
from envs.problem import TuningProblem
from service.strategies.options import WarmStart

LOG = logging.getLogger(__name__)


def complete_params(
    given: Mapping[str, ClassParams], problem: TuningProblem, where: str
) -> dict[str, ClassParams]:
    """Parameters for every class: ``given``, else the manual setting.

    Raises:
        SedtuneInputError: ``given`` names classes the problem does not have, or a class has
            neither an entry nor a manual setting.
    """
    unknown = sorted(set(given) - set(problem.classes))
    if unknown:
        raise SedtuneInputError(
            f"{where}: classes {unknown} are not among the problem's classes {problem.classes}"
        )
    missing = [c for c in problem.classes if c not in given]
    if missing:
        no_manual = [c for c in missing if c not in problem.manual]
        if no_manual:
            raise SedtuneInputError(f"{where}: no parameters for classes {no_manual}")
        LOG.info("%s: no entry for %s; using the manual setting for them", where, missing)
    return {c: given[c] if c in given else problem.manual[c] for c in problem.classes}


def warm_start_params(source: WarmStart, problem: TuningProblem) -> dict[str, ClassParams]:
    """Per-class warm-start parameters for every class of the problem (before snapping).

    Raises:
        SedtuneInputError: Unreadable file, another frame hop, unknown classes.
    """
    where = "options.warm_start"
    if isinstance(source, str):
        pf = load_params(source)
        # Kernels are in frames: another hop would mean other filter lengths.
        check_hop(pf, problem.tuning.frame_hop_s, f"{where} ({source})")
        given = pf.classes
    else:
        given = {str(k): class_params_from_json(v, f"{where}.{k}") for k, v in source.items()}
    return complete_params(given, problem, where)
