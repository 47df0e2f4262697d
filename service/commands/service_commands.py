"""Service commands: ``serve``, ``submit``, ``jobs …``, ``schedules …``.

The client commands talk to a server (``--server`` or ``$SEDTUNE_SERVER``, token ``--token`` or
``$SEDTUNE_TOKEN``); ``submit --ray-address URL`` submits straight to a cluster's Ray Jobs API
without a server. Errors are one line and a non-zero exit code (see :mod:`service.cli`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from typing import Any

from envs.errors import SedtuneInputError
from service.commands import service_views as views

LOG = logging.getLogger(__name__)

FINAL = ("SUCCEEDED", "FAILED", "STOPPED")
WATCH_INTERVAL_S = 2.0


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=os.environ.get("SEDTUNE_SERVER"),
                   help="server URL (default $SEDTUNE_SERVER)")
    p.add_argument("--token", default=None, help="bearer token (default $SEDTUNE_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the server's JSON")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the service commands to the CLI."""
    p = sub.add_parser("serve", help="run the HTTP API, the scheduler and the Ray reconciler")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--config", help="YAML settings file (SEDTUNE_* environment variables win)")
    p.set_defaults(handler=run_serve)

    p = sub.add_parser("submit", help="submit a job spec to a server (or straight to a Ray cluster)")
    p.add_argument("spec", help="job spec (YAML or JSON)")
    _client_args(p)
    p.add_argument("--ray-address", help="Ray Jobs API URL (http://host:8265): submit without a server")
    p.add_argument("--python", default="python", help="Python on the cluster (with --ray-address)")
    p.add_argument("--wait", action="store_true", help="wait until the job ends (exit 1 unless it succeeded)")
    p.add_argument("--idempotency-key", metavar="KEY",
                   help="Idempotency-Key of the submission (default: a fresh one). The request is sent again "
                        "with it when its answer is lost; give the key a failed submit printed to retry "
                        "without creating a second job")
    p.set_defaults(handler=run_submit)

    jobs = sub.add_parser("jobs", help="list, show, cancel jobs and fetch results").add_subparsers(
        dest="jobs_command", required=True, metavar="ACTION")
    p = jobs.add_parser("list", help="jobs, newest first")
    _client_args(p)
    p.add_argument("--status", help="only this state (QUEUED, PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)")
    p.add_argument("--name", help="only this job name")
    p.add_argument("--schedule", help="only jobs of this schedule id")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(handler=run_jobs_list)
    for action, helptext, fn in (("show", "status, progress, best F1, Ray id, MLflow link", run_jobs_show),
                                 ("cancel", "cancel an unfinished job", run_jobs_cancel),
                                 ("result", "comparison and parameters", run_jobs_result)):
        p = jobs.add_parser(action, help=helptext)
        p.add_argument("job_id")
        _client_args(p)
        if action != "cancel":
            p.add_argument("--watch", action="store_true", help="follow the job until it ends")
        p.set_defaults(handler=fn)

    sch = sub.add_parser("schedules", help="cron schedules of a job spec").add_subparsers(
        dest="schedules_command", required=True, metavar="ACTION")
    p = sch.add_parser("create", help="create a schedule")
    p.add_argument("name")
    p.add_argument("spec", help="job spec (YAML or JSON)")
    p.add_argument("--cron", required=True, help="five-field cron line, e.g. '30 2 * * *'")
    p.add_argument("--tz", default="UTC", help="IANA time zone of the cron line (default UTC)")
    _client_args(p)
    p.set_defaults(handler=run_schedules_create)
    p = sch.add_parser("list", help="every schedule")
    _client_args(p)
    p.set_defaults(handler=run_schedules_list)
    for action in ("show", "pause", "resume", "delete", "run", "history"):
        helptext = "a schedule's runs" if action == "history" else f"{action} a schedule"
        p = sch.add_parser(action, help=helptext)
        p.add_argument("schedule_id")
        _client_args(p)
        p.set_defaults(handler=run_schedules_action, action=action)


# ---------------------------------------------------------------------- serve


def run_serve(args: argparse.Namespace) -> int:
    """``sedtune serve``."""
    import uvicorn
    from sqlalchemy.engine import make_url

    from service.api.app import build_app
    from service.server.settings import load_settings

    settings = load_settings(args.config)
    if not settings.tokens:
        raise SedtuneInputError("no bearer tokens configured: set SEDTUNE_TOKENS or SEDTUNE_TOKENS_FILE "
                                "(every route but /health needs one)")
    for d in (settings.data_dir, *settings.output_roots):
        os.makedirs(d, exist_ok=True)
    # Bind first: a port already taken is refused before the app starts its loops (which would
    # dispatch queued jobs and fire schedules in a process that then cannot serve).
    sock = _listen(args.host, args.port)
    app = build_app(settings)
    db = make_url(settings.db_url).render_as_string(hide_password=True)
    LOG.info("sedtune serve on http://%s:%d: store %s, Ray %s, data roots %s, output roots %s, %d token(s)",
             args.host, args.port, db, settings.ray_address, list(settings.data_roots),
             list(settings.output_roots), len(settings.tokens))
    config = uvicorn.Config(app, host=args.host, port=args.port,
                            log_level="info" if args.verbose else "warning", log_config=None)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), listening.

    Raises:
        SedtuneInputError: The address cannot be bound (taken, not local, no permission).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise SedtuneInputError(f"--host/--port: cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


# ---------------------------------------------------------------------- client helpers


def _client(args: argparse.Namespace) -> Any:
    from service.commands.client import ServiceClient

    return ServiceClient(args.server or "", args.token or os.environ.get("SEDTUNE_TOKEN", ""))


def _print(args: argparse.Namespace, doc: Any, text: str) -> None:
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        print(text)


def _spec_json(path: str) -> dict[str, Any]:
    from service.tuning.spec import load_spec

    return load_spec(path).model_dump(mode="json", exclude_unset=True)


def _watch(client: Any, job_id: str, quiet: bool = False) -> dict[str, Any]:
    """Poll a job until it ends, printing a line whenever its progress changes."""
    last = ""
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}")
        line = views.progress_line(job)
        if line != last and not quiet:
            print(line, flush=True)
            last = line
        if job["status"] in FINAL:
            return job
        time.sleep(WATCH_INTERVAL_S)


# ---------------------------------------------------------------------- submit


def run_submit(args: argparse.Namespace) -> int:
    """``sedtune submit SPEC``."""
    if args.ray_address:
        return _submit_to_ray(args)
    client = _client(args)
    job = client.create("/v1/jobs", _spec_json(args.spec), key=args.idempotency_key)
    _print(args, job, f"submitted job {job['id']} ({job['name']}): {job['status']}; "
                     f"output {job['output_dir']}")
    if args.wait:
        job = _watch(client, job["id"], quiet=args.json)
        return 0 if job["status"] == "SUCCEEDED" else 1
    return 0


def _submit_to_ray(args: argparse.Namespace) -> int:
    """Submit straight to a cluster's Jobs API: the spec travels in a job file inside the job's
    working directory, which Ray uploads to the cluster (no folder is known to be shared with
    it), so the command line stays short whatever the spec's size."""
    import tempfile

    from service.server.entrypoint import build_entrypoint, new_job_id
    from service.server.jobfile import write_jobfile
    from service.server.policy import check_options
    from service.server.submitter import RayJobsSubmitter
    from service.tuning.spec import load_spec

    spec = load_spec(args.spec)
    check_options(spec)
    job_id = new_job_id()
    sub = RayJobsSubmitter(args.ray_address)
    with tempfile.TemporaryDirectory(prefix="sedtune-submit-") as folder:
        name = f"{job_id}.json"  # the job runs in the uploaded folder: a relative path finds it
        sha = write_jobfile(os.path.join(folder, name), job_id, spec, None)
        entrypoint = build_entrypoint(args.python, job_id, name, sha)
        ray_id = sub.submit(job_id, entrypoint, {"SEDTUNE_JOB_ID": job_id},
                            {"sedtune_job": job_id, "name": spec.name}, working_dir=folder)
    doc = {"id": job_id, "ray_job_id": ray_id, "address": args.ray_address, "output_dir": spec.output_dir}
    _print(args, doc, f"submitted job {job_id} to Ray at {args.ray_address} (Ray id {ray_id}); "
                      f"results in {spec.output_dir} on the cluster")
    if not args.wait:
        return 0
    status = ""
    while status not in FINAL:
        time.sleep(WATCH_INTERVAL_S)
        st = sub.state(ray_id)
        if st.status != status and not args.json:
            print(f"{job_id} {st.status}", flush=True)
        status = st.status
    return 0 if status == "SUCCEEDED" else 1


# ---------------------------------------------------------------------- jobs


def run_jobs_list(args: argparse.Namespace) -> int:
    """``sedtune jobs list``."""
    doc = _client(args).get("/v1/jobs", status=args.status, name=args.name, schedule=args.schedule,
                            limit=args.limit)
    _print(args, doc, views.jobs_table(doc["jobs"]))
    return 0


def run_jobs_show(args: argparse.Namespace) -> int:
    """``sedtune jobs show ID [--watch]``."""
    client = _client(args)
    if args.watch:
        _watch(client, args.job_id, quiet=args.json)
    job = client.get(f"/v1/jobs/{args.job_id}")
    _print(args, job, views.job_detail(job))
    return 0


def run_jobs_cancel(args: argparse.Namespace) -> int:
    """``sedtune jobs cancel ID``."""
    job = _client(args).post(f"/v1/jobs/{args.job_id}/cancel")
    _print(args, job, f"job {job['id']}: cancel requested; status {job['status']}")
    return 0


def run_jobs_result(args: argparse.Namespace) -> int:
    """``sedtune jobs result ID [--watch]``."""
    client = _client(args)
    if args.watch:
        job = _watch(client, args.job_id, quiet=args.json)
        if job["status"] != "SUCCEEDED":
            why = job.get("error") or "no result"
            raise SedtuneInputError(f"job {args.job_id} ended {job['status']}: {why}")
    res = client.get(f"/v1/jobs/{args.job_id}/result")
    _print(args, res, views.result_view(res))
    return 0


# ---------------------------------------------------------------------- schedules


def run_schedules_create(args: argparse.Namespace) -> int:
    """``sedtune schedules create NAME SPEC --cron LINE [--tz ZONE]``."""
    body = {"name": args.name, "cron": args.cron, "timezone": args.tz, "spec": _spec_json(args.spec)}
    s = _client(args).post("/v1/schedules", body)
    _print(args, s, f"created schedule {s['id']} ({s['name']}): '{s['cron']}' in {s['timezone']}, "
                    f"next run {s['next_run_at']}")
    return 0


def run_schedules_list(args: argparse.Namespace) -> int:
    """``sedtune schedules list``."""
    doc = _client(args).get("/v1/schedules")
    _print(args, doc, views.schedules_table(doc["schedules"]))
    return 0


def run_schedules_action(args: argparse.Namespace) -> int:
    """``sedtune schedules show|pause|resume|delete|run|history ID``."""
    client = _client(args)
    path = f"/v1/schedules/{args.schedule_id}"
    if args.action == "show":
        s = client.get(path)
        _print(args, s, views.schedules_table([s]))
    elif args.action in ("pause", "resume"):
        s = client.post(f"{path}/{args.action}")
        state = "paused" if s["paused"] else "active"
        _print(args, s, f"schedule {s['id']}: {state}, next run {s['next_run_at'] or '-'}")
    elif args.action == "delete":
        client.request("DELETE", path)
        _print(args, {"deleted": args.schedule_id}, f"deleted schedule {args.schedule_id}")
    elif args.action == "run":
        status, run = client.request("POST", f"{path}/run", ok=(409,))
        _print(args, run, views.run_line(run))
        return 0 if status < 400 else 1
    else:
        doc = client.get(f"{path}/history")
        _print(args, doc, "\n".join(views.run_line(r) for r in doc["runs"]) or "no runs yet")
    return 0
