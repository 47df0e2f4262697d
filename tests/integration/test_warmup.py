"""The install-time warm-up compiles what a job needs: a job after it compiles nothing.

``python -m envs.warmup`` (run by ``deploy/install.sh``) fills the numba cache; then a job
with both decoders (manual and exact, held-out scoring, selection: the evaluator's decision,
sweep and matching paths) runs in a new process on the same cache and must leave it exactly
as it was (a compile would add or rewrite a cache file). Both processes use a private cache
(``NUMBA_CACHE_DIR``), so the checkout's own cache is neither used nor touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

JOB = textwrap.dedent(
    """
    import sys
    from envs.synth import generate
    from envs.synth_config import SynthConfig
    from service.commands.tune_commands import demo_spec
    from service.tuning.runner import run_job
    from service.tuning.spec import parse_spec

    root = sys.argv[1]
    generate(root + "/data", SynthConfig(n_clips=60, n_classes=3, seed=1))
    rows = 0
    for budget in (40, None):  # a threshold grid, then every threshold
        raw = demo_spec(root, 40, 0)
        raw["strategies"] = [{"name": "manual"}, {"name": "exact", "budget": budget}]
        raw.pop("tracking")
        rows += len(run_job(parse_spec(raw), use_ray=False).rows)
    print(rows)
    """
)


def _cache(path: Path) -> dict[str, tuple[int, int]]:
    """Every cache file with its size and modification time (ns)."""
    files = (p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


def test_a_job_after_the_warm_up_compiles_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "numba-cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}
    warm = subprocess.run(
        [sys.executable, "-m", "envs.warmup"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert warm.returncode == 0, warm.stderr
    assert "compiled kernels ready" in warm.stderr
    before = _cache(cache)
    assert any(name.endswith(".nbc") for name in before) and any(name.endswith(".nbi") for name in before)

    job = subprocess.run(
        [sys.executable, "-c", JOB, str(tmp_path / "job")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    assert int(job.stdout.split()[-1]) == 6  # manual's row and exact's two, twice
    after = _cache(cache)
    assert after == before, sorted(set(after.items()) ^ set(before.items()))
