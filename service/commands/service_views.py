"""Plain-text views of API answers for the service commands (jobs, results, schedules, runs)."""

from __future__ import annotations

from typing import Any


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}" if isinstance(x, float) else str(x)


def _t(x: Any) -> str:
    return "-" if not x else str(x).replace("T", " ")[:19]


def table(rows: list[list[str]], header: list[str]) -> str:
    """A left-aligned text table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def jobs_table(jobs: list[dict[str, Any]]) -> str:
    """``sedtune jobs list``."""
    rows = [[j["id"], j["name"], j["status"], _t(j["created_at"]), _t(j.get("finished_at")),
             j.get("schedule_id") or "-"] for j in jobs]
    return table(rows, ["ID", "NAME", "STATUS", "CREATED (UTC)", "FINISHED (UTC)", "SCHEDULE"])


def progress_line(job: dict[str, Any]) -> str:
    """One line: status, phase, per-strategy progress, best F so far."""
    parts = [f"{job['id']} {job['status']}"]
    if job.get("phase"):
        parts.append(f"phase {job['phase']}")
    prog = job.get("progress") or {}
    if prog:
        items = []
        for name, p in prog.items():
            frac = p.get("fraction")
            state = p.get("state") or "?"
            pct = f" {100 * frac:.0f}%" if frac is not None and state == "running" else ""
            items.append(f"{name} {state}{pct}")
        parts.append(", ".join(items))
    if job.get("best_tuning_f") is not None:
        parts.append(f"best tuning F1 {_f(job['best_tuning_f'])}")
    if job.get("best_heldout_f") is not None:
        parts.append(f"held-out F1 {_f(job['best_heldout_f'])} ({job.get('recommended')})")
    return " | ".join(parts)


def job_detail(job: dict[str, Any]) -> str:
    """``sedtune jobs show``."""
    lines = [
        f"job        {job['id']} ({job['name']})",
        f"status     {job['status']}" + (f" (phase {job['phase']})" if job.get("phase") else ""),
        f"ray job    {job.get('ray_job_id') or '-'}",
        f"output     {job['output_dir']}",
        f"created    {_t(job['created_at'])}   started {_t(job.get('started_at'))}   "
        f"finished {_t(job.get('finished_at'))}",
    ]
    if job.get("schedule_id"):
        lines.append(f"schedule   {job['schedule_id']}")
    prog = job.get("progress") or {}
    if prog:
        rows = [[n, p.get("state") or "-", _f(p.get("evaluations")), _f(p.get("budget")),
                 _f(p.get("best_tuning_f"))] for n, p in prog.items()]
        lines += ["", table(rows, ["STRATEGY", "STATE", "EVALUATIONS", "BUDGET", "BEST TUNING F1"])]
    if job.get("best_tuning_f") is not None:
        lines.append(f"best tuning F1 so far: {_f(job['best_tuning_f'])}")
    if job.get("recommended"):
        lines.append(f"recommended: {job['recommended']} (held-out F1 {_f(job.get('best_heldout_f'))})")
    ml = job.get("mlflow")
    if ml:
        lines.append(f"mlflow     {ml.get('url') or ml.get('uri')} (experiment {ml.get('experiment')}, "
                     f"run {ml.get('run_id')})")
    if job.get("error"):
        lines.append(f"error      {job['error']}")
    return "\n".join(lines)


def result_view(res: dict[str, Any]) -> str:
    """``sedtune jobs result``: the comparison and the recommended parameters."""
    comp = res["comparison"]
    rows = []
    for r in comp.get("rows", []):
        g = r.get("gain_over_manual") or {}
        rows.append([r["strategy"], r["selection"], _f(r["tuning_f"]["mean"]), _f(r["heldout_f"]["mean"]),
                     _f(g.get("mean")), _f(r.get("evaluations"))])
    lines = [f"job {res['job_id']}: {comp.get('message', '')}", "",
             table(rows, ["STRATEGY", "SELECTION", "TUNING F1", "HELD-OUT F1", "GAIN", "EVALUATIONS"])]
    best = res.get("best_params")
    if best:
        prow = [[c, str(p.get("median_filter_frames")), _f(p.get("threshold")), _f(p.get("fill_gap_s")),
                 _f(p.get("min_duration_s"))] for c, p in best.get("classes", {}).items()]
        lines += ["", f"best parameters ({comp.get('recommended')}):",
                  table(prow, ["CLASS", "KERNEL", "THRESHOLD", "FILL GAP S", "MIN DURATION S"])]
    names = ", ".join(res.get("params", {})) or "-"
    lines += ["", f"parameter files: {names} (in {res['output_dir']}/params)"]
    return "\n".join(lines)


def schedules_table(scheds: list[dict[str, Any]]) -> str:
    """``sedtune schedules list``."""
    rows = [[s["id"], s["name"], s["cron"], s["timezone"], "paused" if s["paused"] else "active",
             _t(s.get("last_run_at")), _t(s.get("next_run_at"))] for s in scheds]
    return table(rows, ["ID", "NAME", "CRON", "TZ", "STATE", "LAST RUN (UTC)", "NEXT RUN (UTC)"])


def run_line(run: dict[str, Any]) -> str:
    """One schedule run."""
    what = (f"job {run['job_id']} ({run.get('job_status') or '?'})" if run.get("job_id")
            else f"skipped: {run.get('skip_reason')}")
    warm = run.get("warm_start") or {}
    extra = f"; warm start from {warm['job_id']}" if warm.get("job_id") and warm.get("applied_to") else ""
    drift = run.get("drift") or {}
    if drift.get("previous_job_id"):
        d = drift.get("heldout_f", {}).get("delta")
        extra += (f"; drift vs {drift['previous_job_id']}: held-out F1 {'-' if d is None else f'{d:+.4f}'}, "
                  f"{len(drift.get('changed_classes', []))} classes changed")
    return f"#{run['id']} {_t(run['fire_time'])} {run['trigger']}: {what}{extra}"
