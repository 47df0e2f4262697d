"""Mutation check of the honesty-core unit tests (tests/unit/test_honesty_core.py).

For each deliberate breakage of robust selection, the paired bootstrap, the significance
test or the recommendation, this script copies the repository's ``envs/``, ``service/`` and
``tests/`` (and ``pyproject.toml``, for the pytest settings) into a temporary directory,
applies the breakage by exact text replacement, and runs::

    python -m pytest -q tests/unit/test_honesty_core.py

there with ``PYTHONPATH`` set to the temporary directory. The venv has an editable install of
the repository, so a probe plugin written into the copy records which files ``envs``,
``envs.selection``, ``envs.heldout`` and ``service.tuning.runner`` were imported from during
the run; every one must lie in the copy.

A mutant is *killed* when the tests fail, and killed *for the right reason* when one of the
tests meant to catch it is among the failures. Finally the unmutated copy must pass.

Usage (not collected by pytest: it lies outside tests/unit, tests/integration, tests/e2e)::

    .venv/bin/python tests/mutants.py

Exit status: 0 when every mutant is killed by its intended test and the clean copy passes,
1 otherwise (a mutant whose text cannot be found also exits 1, naming the mutant).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_FILE = "tests/unit/test_honesty_core.py"
TEST_ID = TEST_FILE + "::"
PROBED = ("envs", "envs.selection", "envs.heldout", "service.tuning.runner")
PROBE_PLUGIN = "_honesty_probe"
PROBE_SOURCE = f'''"""Records where the honesty core was imported from (written by tests/mutants.py)."""

import os
import sys


def pytest_collection_finish(session):
    """After the test module is imported, write each probed module's file."""
    with open(os.environ["HONESTY_PROBE_OUT"], "w", encoding="utf-8") as fh:
        for name in {PROBED!r}:
            mod = sys.modules.get(name)
            fh.write(f"{{name}}\\t{{getattr(mod, '__file__', None)}}\\n")
'''


@dataclass(frozen=True)
class Mutant:
    """One deliberate breakage.

    Attributes:
        name: What the breakage does.
        path: File to break, relative to the repository root.
        old: Exact text to replace (must occur exactly once).
        new: Replacement text.
        caught_by: Test names (without the module) meant to catch it; at least one must fail.
    """

    name: str
    path: str
    old: str
    new: str
    caught_by: tuple[str, ...]


SELECTION = "envs/selection.py"
HELDOUT = "envs/heldout.py"
RUNNER = "service/tuning/runner.py"

MUTANTS: list[Mutant] = [
    Mutant(
        "selection without smoothing (every candidate scored on its own F)",
        SELECTION,
        "    if width <= 0 and kernel_width <= 0 and merge_width <= 0:\n        return f\n",
        "    if True:\n        return f\n",
        (
            "test_robust_takes_the_plateau_over_the_spike_at_fixed_width",
            "test_robust_default_chooses_smoothing_by_cv_and_takes_the_plateau_centre",
            "test_robust_smooths_over_neighbouring_kernels",
            "test_robust_smooths_over_neighbouring_merge_criteria",
        ),
    ),
    Mutant(
        "selection ignores threshold neighbours (plateau width forced to one threshold)",
        SELECTION,
        '                lo[j, mine] = ra + np.searchsorted(rt, t - width - 1e-12, side="left")\n'
        '                hi[j, mine] = ra + np.searchsorted(rt, t + width + 1e-12, side="right")\n',
        '                lo[j, mine] = ra + np.searchsorted(rt, t - 1e-12, side="left")\n'
        '                hi[j, mine] = ra + np.searchsorted(rt, t + 1e-12, side="right")\n',
        (
            "test_robust_takes_the_plateau_over_the_spike_at_fixed_width",
            "test_robust_default_chooses_smoothing_by_cv_and_takes_the_plateau_centre",
        ),
    ),
    Mutant(
        "selection ignores kernel neighbours (plateau width forced to one kernel)",
        SELECTION,
        "            for dk in range(-kernel_width, kernel_width + 1)\n",
        "            for dk in (0,)\n",
        ("test_robust_smooths_over_neighbouring_kernels",),
    ),
    Mutant(
        "selection ignores merge-criterion neighbours (plateau width forced to one criterion)",
        SELECTION,
        "            for dm in range(-merge_width, merge_width + 1)\n",
        "            for dm in (0,)\n",
        ("test_robust_smooths_over_neighbouring_merge_criteria",),
    ),
    Mutant(
        "merge smoothing mixes the criteria (relative values are neighbours of absolute ones)",
        SELECTION,
        '                    merge = ("rel",)\n',
        '                    merge = ("abs",)\n',
        ("test_merge_smoothing_keeps_the_criteria_apart",),
    ),
    Mutant(
        "smoothing chosen in-sample (cross-validation does not leave the fold out)",
        SELECTION,
        "                train = total - counts[:, f] if n_folds > 1 else total\n",
        "                train = total\n",
        ("test_robust_default_chooses_smoothing_by_cv_and_takes_the_plateau_centre",),
    ),
    Mutant(
        "selection without shrinkage toward manual",
        SELECTION,
        "        if cfg.shrink_z is not None and n_folds > 1:\n",
        "        if False:\n",
        ("test_shrinkage_keeps_manual_where_the_cv_gain_is_noise",),
    ),
    Mutant(
        "bootstrap ignores the pairing (independent weights for strategy and manual)",
        HELDOUT,
        "        reps += replicate_macro_f(mine, w) - replicate_macro_f(manual, w)\n",
        "        w_manual = bootstrap_weights(n, n_boot, seed + 7919 * k + 1)\n"
        "        reps += replicate_macro_f(mine, w) - replicate_macro_f(manual, w_manual)\n",
        (
            "test_pairing_makes_a_constant_gain_exact",
            "test_interval_is_of_the_mean_gain_over_splits",
            "test_identical_counts_give_a_zero_interval",
            "test_swapping_strategy_and_manual_negates_the_interval",
        ),
    ),
    Mutant(
        "bootstrap interval of the sum over splits, not the mean",
        HELDOUT,
        "    reps /= len(split_counts)\n",
        "",
        ("test_interval_is_of_the_mean_gain_over_splits",),
    ),
    Mutant(
        "a 50% interval reported as the 95% one",
        HELDOUT,
        "    lo, hi = np.nanpercentile(reps, [2.5, 97.5])\n",
        "    lo, hi = np.nanpercentile(reps, [25, 75])\n",
        ("test_small_noisy_gain_is_not_significant_and_the_interval_is_calibrated",),
    ),
    Mutant(
        "significance ignores the lower bound (point gain > 0)",
        HELDOUT,
        "        return bool(self.low > 0)\n",
        "        return bool(self.gain > 0)\n",
        (
            "test_small_noisy_gain_is_not_significant_and_the_interval_is_calibrated",
            "test_significant_means_the_whole_interval_is_above_zero",
        ),
    ),
    Mutant(
        "significance ignores the lower bound (upper bound > 0)",
        HELDOUT,
        "        return bool(self.low > 0)\n",
        "        return bool(self.high > 0)\n",
        (
            "test_equal_totals_interval_covers_zero_and_is_not_significant",
            "test_significant_means_the_whole_interval_is_above_zero",
        ),
    ),
    Mutant(
        "significance counts a lower bound of exactly 0",
        HELDOUT,
        "        return bool(self.low > 0)\n",
        "        return bool(self.low >= 0)\n",
        (
            "test_identical_counts_give_a_zero_interval",
            "test_significant_means_the_whole_interval_is_above_zero",
        ),
    ),
    Mutant(
        "recommend ignores significance (any positive gain is stated as a gain)",
        RUNNER,
        "    if g.significant:\n",
        "    if g.gain > 0:\n",
        ("test_recommend_not_significant_says_no_strategy_beats_manual_significantly",),
    ),
    Mutant(
        "recommend ignores the job's selection mode (naive rows compete with robust)",
        RUNNER,
        '    eligible = [r for r in rows if r.selection in (selection, "fixed") and r.params is not None]\n',
        "    eligible = [r for r in rows if r.params is not None]\n",
        ("test_recommend_takes_only_the_jobs_selection_mode",),
    ),
]


@dataclass(frozen=True)
class RunResult:
    """Outcome of one pytest run in a copy.

    Attributes:
        returncode: pytest's exit status.
        failed: Names of the failed tests (without the module).
        summary: pytest's last output line.
        imported: Module name -> file it was imported from during the run.
        output: Full pytest output (stdout and stderr).
    """

    returncode: int
    failed: tuple[str, ...]
    summary: str
    imported: dict[str, str]
    output: str


def _copy_repo(dst: Path) -> None:
    """Copy envs/, service/, tests/ and pyproject.toml into ``dst``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    for name in ("envs", "service", "tests"):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dst / "pyproject.toml")
    (dst / f"{PROBE_PLUGIN}.py").write_text(PROBE_SOURCE, encoding="utf-8")


def _apply(n: int, mutant: Mutant, dst: Path) -> None:
    """Apply one breakage to the copy; exit loudly if its text is not found exactly once."""
    target = dst / mutant.path
    text = target.read_text(encoding="utf-8")
    hits = text.count(mutant.old)
    if hits != 1:
        sys.exit(
            f"mutant {n}: could not apply ({mutant.name}): the text to replace occurs {hits} times "
            f"in {mutant.path}:\n{mutant.old}"
        )
    target.write_text(text.replace(mutant.old, mutant.new), encoding="utf-8")


def _run(dst: Path) -> RunResult:
    """Run the honesty-core tests in the copy, with the copy first on PYTHONPATH."""
    probe_out = dst / "probe.txt"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(dst), *filter(None, [env.get("PYTHONPATH")])])
    env["HONESTY_PROBE_OUT"] = str(probe_out)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-q", TEST_FILE, "-p", PROBE_PLUGIN, "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, cwd=dst, env=env, capture_output=True, text=True, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    failed = tuple(
        line.split(TEST_ID, 1)[1].split(" ", 1)[0].split("[", 1)[0]
        for line in output.splitlines()
        if line.startswith(("FAILED ", "ERROR ")) and TEST_ID in line
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    imported: dict[str, str] = {}
    if probe_out.exists():
        for line in probe_out.read_text(encoding="utf-8").splitlines():
            name, _, path = line.partition("\t")
            imported[name] = path
    return RunResult(proc.returncode, failed, lines[-1] if lines else "", imported, output)


def _check_imports(dst: Path, result: RunResult, label: str) -> bool:
    """Print where the honesty core came from; True when every probed module is in the copy."""
    ok = True
    for name in PROBED:
        path = result.imported.get(name, "None")
        inside = path != "None" and Path(path).resolve().is_relative_to(dst.resolve())
        ok &= inside
        if name == "envs" or not inside:
            print(f"    {label}: {name}.__file__ = {path}{'' if inside else '  <-- NOT THE COPY'}")
    return ok


def main() -> int:
    """Run every mutant and the clean copy; return the exit status."""
    bad = 0
    print(f"honesty-core mutation check: {len(MUTANTS)} mutants, tests {TEST_FILE}")
    for n, mutant in enumerate(MUTANTS, start=1):
        with tempfile.TemporaryDirectory(prefix=f"sedtune-mutant{n}-") as tmp:
            dst = Path(tmp)
            _copy_repo(dst)
            _apply(n, mutant, dst)
            t0 = time.perf_counter()
            res = _run(dst)
            secs = time.perf_counter() - t0
            print(f"mutant {n}: {mutant.name} [{mutant.path}]")
            imports_ok = _check_imports(dst, res, f"mutant {n}")
            intended = sorted(set(res.failed) & set(mutant.caught_by))
            if not imports_ok:
                verdict = "INVALID (the copy was not what got imported)"
            elif res.returncode == 0:
                verdict = "SURVIVED"
            elif not intended:
                verdict = "killed for the WRONG reason (none of the intended tests failed)"
            else:
                verdict = "killed"
            if verdict != "killed":
                bad += 1
            print(f"    {verdict} in {secs:.1f} s: {res.summary}")
            print(f"    failing tests: {', '.join(sorted(set(res.failed))) or '-'}")
            print(f"    intended and failing: {', '.join(intended) or '-'}")
            if verdict not in ("killed", "SURVIVED"):
                print(res.output)
    with tempfile.TemporaryDirectory(prefix="sedtune-clean-") as tmp:
        dst = Path(tmp)
        _copy_repo(dst)
        res = _run(dst)
        print("clean copy (no mutation):")
        imports_ok = _check_imports(dst, res, "clean")
        clean_ok = res.returncode == 0 and imports_ok
        print(f"    {'passes' if clean_ok else 'FAILS'}: {res.summary}")
        if not clean_ok:
            print(res.output)
            bad += 1
    print("all mutants killed, clean copy passes" if bad == 0 else f"{bad} problem(s): see above")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
