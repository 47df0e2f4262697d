"""Reading a finished job's result directory for the API, and its summary for the store.

The layout is :func:`service.tuning.outputs.write_outputs`'s: ``comparison.json``,
``params/<strategy>.<selection>.json``, ``best_params.json``, plus the job's ``status.json``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from service.results.status import read_status

#: Result files larger than this are not served (bytes).
MAX_FILE_BYTES = 20 * 1024 * 1024


class ResultMissingError(Exception):
    """The result files are not (or no longer) readable by the service."""


def _read_json(path: str) -> Any:
    try:
        if os.path.getsize(path) > MAX_FILE_BYTES:
            raise ResultMissingError(f"{path} is larger than {MAX_FILE_BYTES} bytes; "
                                     "read it from the output directory")
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ResultMissingError(f"{path} not found") from None
    except (OSError, ValueError) as e:
        raise ResultMissingError(f"{path} cannot be read ({e})") from None


def read_result(output_dir: str) -> dict[str, Any]:
    """The comparison table and every parameter file of a result directory.

    Returns:
        ``{"output_dir", "comparison", "params": {"<strategy>.<selection>": param file},
        "best_params": param file or None}``.

    Raises:
        ResultMissingError: ``comparison.json`` or a parameter file cannot be read.
    """
    comparison = _read_json(os.path.join(output_dir, "comparison.json"))
    params: dict[str, Any] = {}
    pdir = os.path.join(output_dir, "params")
    if os.path.isdir(pdir):
        for name in sorted(os.listdir(pdir)):
            if name.endswith(".json"):
                params[name[: -len(".json")]] = _read_json(os.path.join(pdir, name))
    best_path = os.path.join(output_dir, "best_params.json")
    best = _read_json(best_path) if os.path.exists(best_path) else None
    return {"output_dir": output_dir, "comparison": comparison, "params": params, "best_params": best}


def summarize(output_dir: str) -> dict[str, Any]:
    """A small summary of a successful job, kept in the store (survives a lost output directory).

    Returns:
        ``{"recommended", "message", "heldout_f", "tuning_f", "classes", "frame_hop_s", "rows":
        [{"key", "heldout_f", "tuning_f", "gain", "evaluations"}], "best_params": {class: params},
        "best_params_path", "mlflow"}``.

    Raises:
        ResultMissingError: ``comparison.json`` cannot be read.
    """
    comp = _read_json(os.path.join(output_dir, "comparison.json"))
    rows = [{"key": f"{r['strategy']}/{r['selection']}", "heldout_f": r["heldout_f"]["mean"],
             "tuning_f": r["tuning_f"]["mean"], "gain": r["gain_over_manual"]["mean"],
             "evaluations": r["evaluations"]} for r in comp.get("rows", [])]
    rec = next((r for r in rows if r["key"] == comp.get("recommended")), None)
    best_path = os.path.join(output_dir, "best_params.json")
    best = None
    if os.path.exists(best_path):
        try:
            best = _read_json(best_path).get("classes")
        except ResultMissingError:
            best = None
    status = read_status(output_dir) or {}
    return {
        "recommended": comp.get("recommended"), "message": comp.get("message"),
        "heldout_f": rec["heldout_f"] if rec else None, "tuning_f": rec["tuning_f"] if rec else None,
        "classes": comp.get("classes"), "frame_hop_s": comp.get("frame_hop_s"), "rows": rows,
        "best_params": best, "best_params_path": best_path if best is not None else None,
        "mlflow": status.get("mlflow"), "tracking": status.get("tracking"),
    }
