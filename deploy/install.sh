#!/usr/bin/env bash
# Install sedtune and its locked dependencies into a virtualenv (default: .venv at the repo root).
#
#   bash deploy/install.sh            # creates/updates .venv
#   SEDTUNE_VENV=/opt/venv bash deploy/install.sh
#
# torch is installed first and pinned (torch==2.13.0, the CPU wheel): an unpinned torch would
# pull gigabytes of CUDA packages. A stamp of the lock file's hash skips reinstalling when
# nothing changed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${SEDTUNE_VENV:-$root/.venv}
lock=$root/deploy/requirements.lock
py=${PYTHON:-$(command -v python3.11 || command -v python3)}

if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
stamp=$venv/.sedtune-lock.sha256
want=$(cat "$lock" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check torch==2.13.0
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$lock"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -e "$root"
  echo "$want" > "$stamp"
else
  echo "install.sh: $venv is up to date"
fi
# Compile sedtune's numba kernels once now (about 10 s; under a second when already cached),
# so that no job, and none of its Ray workers, compiles them on first use (envs/warmup.py).
"$venv/bin/python" -m envs.warmup
