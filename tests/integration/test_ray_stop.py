"""A real local Ray instance stopped with its processes in the background (the ``sedtune`` script's
way, :mod:`service.tuning.ray_stop`): the process goes on using Python objects that hold Ray
references, and the instance's processes are gone once :func:`ray_stop.wait` returns.

The script runs in its own process: a core worker called during its shutdown ends the process
(exit code 1, a glog line), which a test in the pytest process could not survive to report.
Before the fix (the whole ``ray.shutdown`` in the thread) this ended the script every time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import time
    import ray
    from ray._private import worker
    from service.tuning import ray_stop

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    refs = [ray.put(i) for i in range(3000)]
    processes = [p.process for infos in worker._global_node.all_processes.values() for p in infos]
    ray_stop.stop_in_background()
    ray_stop.stop()
    assert not ray.is_initialized()
    while refs:  # the caller goes on (writing results), freeing Ray objects as it goes
        del refs[-100:]
        time.sleep(0.0005)
    ray_stop.wait()
    alive = [p.pid for p in processes if p.poll() is None]
    print("alive after wait:", alive)
    """
)


def test_the_caller_frees_ray_objects_while_the_processes_stop(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "alive after wait: []" in proc.stdout, proc.stdout + proc.stderr[-3000:]
