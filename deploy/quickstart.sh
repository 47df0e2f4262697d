#!/usr/bin/env bash
# The README's main command: install into .venv, then run the demo on its embedded defaults
# (generated data, local Ray, MLflow on SQLite under sedtune-demo/).
#
#   bash deploy/quickstart.sh [demo options, e.g. --clips 300 --budget 40]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash deploy/install.sh
exec .venv/bin/sedtune demo "$@"
