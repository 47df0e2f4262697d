#!/usr/bin/env bash
# The one entrypoint of sedtune's processes: the image's ENTRYPOINT, every service of
# docker-compose.yml, every container of deploy/k8s, and the e2e test (tests/e2e/cluster_support.py)
# start their processes through this script with a role, so they cannot drift apart.
#
#   entrypoint.sh ray-head             ray start --head --block: GCS, dashboard and Ray Jobs API
#   entrypoint.sh ray-worker           ray start --address=$RAY_HEAD_ADDRESS --block
#   entrypoint.sh mlflow               mlflow server: backend store, artifacts proxied (--serve-artifacts)
#   entrypoint.sh api                  sedtune serve: HTTP API, scheduler, Ray reconciler
#   entrypoint.sh job SPEC [OPTS]      sedtune tune SPEC --address $RAY_ADDRESS (a Ray job's driver)
#   entrypoint.sh job --job-id ID --spec-file FILE [--spec-sha256 HEX]
#                                      python -m service.jobrun (the entrypoint the service submits:
#                                      the spec in a job file under <output root>/.sedtune/jobs;
#                                      a relative job file in the uploaded working directory for
#                                      `sedtune submit --ray-address`)
#   entrypoint.sh healthcheck [ROLE]   exit 0 when ROLE's process answers (default: this container's role)
#   entrypoint.sh CMD [ARGS]           anything else runs as is (sedtune ..., ray status, bash)
#
# Every option comes from an environment variable with a default (table below), so a container, a
# Pod and a test on loopback differ only in their environment. Arguments after a role are appended
# to its command. The final command replaces this shell (exec): signals reach it directly, and a
# caller that started us in our own process group stops everything by that group.
# SEDTUNE_ENTRYPOINT_DRY_RUN=1 prints the command (one `arg ...` line per argument, after the
# `env ...` lines of the variables it exports) instead of running it.
#
# Ray token auth (Ray >= 2.52): RAY_AUTH_MODE must be the same for every Ray node and every
# client (ray CLI, Jobs API client, drivers), or they cannot talk to each other; with the mode
# unset, `ray start --head` turns token auth on by itself as soon as a token file exists. So this
# script always exports an explicit mode for the Ray roles, the API and jobs:
#   RAY_AUTH_MODE   token | disabled; default: token when RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH
#                   is set, otherwise the Ray roles, api and job refuse to start (choose one).
#   RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH   the shared token (KubeRay's authOptions set both).
#
# Ray nodes (ray-head, ray-worker). Under KubeRay with the annotation
# ray.io/overwrite-container-cmd: "true", the operator's generated command
# ($KUBERAY_GEN_RAY_START_CMD, built from rayStartParams) is run instead of the flags below.
#   RAY_GCS_PORT=6379                     --port (head)
#   RAY_HEAD_ADDRESS=ray-head:6379        --address (worker)
#   RAY_DASHBOARD_HOST=0.0.0.0            --dashboard-host (head)
#   RAY_DASHBOARD_PORT=8265               --dashboard-port (head): dashboard and Jobs API
#   RAY_CLIENT_SERVER_PORT=10001          --ray-client-server-port (head)
#   RAY_DASHBOARD_AGENT_LISTEN_PORT=52365 --dashboard-agent-listen-port (raylet health endpoint)
#   RAY_NODE_IP, RAY_NUM_CPUS, RAY_NUM_GPUS, RAY_OBJECT_STORE_MEMORY (bytes), RAY_TEMP_DIR,
#   RAY_NODE_MANAGER_PORT, RAY_OBJECT_MANAGER_PORT, RAY_DASHBOARD_AGENT_GRPC_PORT,
#   RAY_RUNTIME_ENV_AGENT_PORT, RAY_METRICS_EXPORT_PORT, RAY_MIN_WORKER_PORT, RAY_MAX_WORKER_PORT
#                                         the matching `ray start` flags, only when set
# MLflow (mlflow):
#   MLFLOW_BACKEND_STORE_URI=sqlite:///$SEDTUNE_STATE_DIR/mlflow/mlflow.db   (PostgreSQL deployed)
#   MLFLOW_ARTIFACTS_DESTINATION=$SEDTUNE_STATE_DIR/mlflow/artifacts        (or s3://bucket/prefix)
#   MLFLOW_HOST=0.0.0.0  MLFLOW_PORT=5000  MLFLOW_WORKERS=2
#   MLFLOW_SERVER_ALLOWED_HOSTS           --allowed-hosts (Host headers clients use, e.g. mlflow:5000)
# API (api): SEDTUNE_HOST=0.0.0.0  SEDTUNE_PORT=8000  SEDTUNE_CONFIG (YAML, --config)
#   SEDTUNE_VERBOSE=1 (INFO logs); every other setting is a SEDTUNE_* variable read by
#   `sedtune serve` itself (service/server/settings.py).
# Job (job SPEC): RAY_ADDRESS=auto; SEDTUNE_JOB_OUTPUT_ROOT: write into <root>/<UTC time> (--output).
# Shared: SEDTUNE_STATE_DIR=/var/lib/sedtune (where the defaults above put state).
set -euo pipefail

ROLES="ray-head ray-worker mlflow api job"
STATE_DIR=${SEDTUNE_STATE_DIR:-/var/lib/sedtune}

die() {
  echo "entrypoint.sh: $*" >&2
  exit 2
}

# Run (or, dry run, print) the final command; never returns.
run() {
  if [[ ${SEDTUNE_ENTRYPOINT_DRY_RUN:-0} == 1 ]]; then
    printf 'env RAY_AUTH_MODE=%s\n' "${RAY_AUTH_MODE-}"
    printf 'arg %s\n' "$@"
    exit 0
  fi
  exec "$@"
}

# Decide and export RAY_AUTH_MODE. $1=strict: refuse to go on without an explicit decision.
ray_auth() {
  local mode=${RAY_AUTH_MODE:-}
  if [[ -z $mode ]]; then
    if [[ -n ${RAY_AUTH_TOKEN:-} || -n ${RAY_AUTH_TOKEN_PATH:-} ]]; then
      mode=token
    elif [[ $1 == strict ]]; then
      die "RAY_AUTH_MODE is not set: set RAY_AUTH_TOKEN (the same on every Ray node and client)" \
          "for token auth, or RAY_AUTH_MODE=disabled on a trusted network"
    else
      return 0
    fi
  fi
  case $mode in
    token)
      if [[ -z ${RAY_AUTH_TOKEN:-} && ! -r ${RAY_AUTH_TOKEN_PATH:-${HOME:-/nonexistent}/.ray/auth_token} ]]; then
        die "RAY_AUTH_MODE=token but no token: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"
      fi ;;
    disabled) ;;
    *) die "RAY_AUTH_MODE must be token or disabled, but got '$mode'" ;;
  esac
  export RAY_AUTH_MODE=$mode
}

# Append "--flag=value" to the array named $1 for every "VAR:--flag" pair whose VAR is set.
add_flags() {
  local -n out=$1
  shift
  local pair var
  for pair in "$@"; do
    var=${pair%%:*}
    if [[ -n ${!var:-} ]]; then
      out+=("${pair#*:}=${!var}")
    fi
  done
}

ray_common() {
  ray_auth strict
  export RAY_USAGE_STATS_ENABLED=${RAY_USAGE_STATS_ENABLED:-0} PYTHONUNBUFFERED=1
  # KubeRay prepends this to its generated command; Ray needs many descriptors.
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  : "${RAY_DASHBOARD_AGENT_LISTEN_PORT:=52365}"
}

NODE_FLAGS=(
  RAY_NODE_IP:--node-ip-address RAY_NUM_CPUS:--num-cpus RAY_NUM_GPUS:--num-gpus
  RAY_OBJECT_STORE_MEMORY:--object-store-memory RAY_TEMP_DIR:--temp-dir
  RAY_NODE_MANAGER_PORT:--node-manager-port RAY_OBJECT_MANAGER_PORT:--object-manager-port
  RAY_DASHBOARD_AGENT_LISTEN_PORT:--dashboard-agent-listen-port
  RAY_DASHBOARD_AGENT_GRPC_PORT:--dashboard-agent-grpc-port
  RAY_RUNTIME_ENV_AGENT_PORT:--runtime-env-agent-port RAY_METRICS_EXPORT_PORT:--metrics-export-port
  RAY_MIN_WORKER_PORT:--min-worker-port RAY_MAX_WORKER_PORT:--max-worker-port
)

kuberay_start() {
  # KubeRay's generated `ray start ...` (ports and resources from rayStartParams and the Pod).
  local cmd=$KUBERAY_GEN_RAY_START_CMD
  [[ $cmd == *--block* ]] || cmd="$cmd --block"
  run bash -c "exec $cmd $*"
}

role_ray_head() {
  ray_common
  if [[ -n ${KUBERAY_GEN_RAY_START_CMD:-} ]]; then kuberay_start "$@"; fi
  : "${RAY_GCS_PORT:=6379}" "${RAY_DASHBOARD_HOST:=0.0.0.0}" "${RAY_DASHBOARD_PORT:=8265}"
  : "${RAY_CLIENT_SERVER_PORT:=10001}"
  local cmd=(ray start --head --block --disable-usage-stats --include-dashboard=true
             "--port=$RAY_GCS_PORT" "--dashboard-host=$RAY_DASHBOARD_HOST"
             "--dashboard-port=$RAY_DASHBOARD_PORT" "--ray-client-server-port=$RAY_CLIENT_SERVER_PORT")
  add_flags cmd "${NODE_FLAGS[@]}"
  run "${cmd[@]}" "$@"
}

role_ray_worker() {
  ray_common
  if [[ -n ${KUBERAY_GEN_RAY_START_CMD:-} ]]; then kuberay_start "$@"; fi
  : "${RAY_HEAD_ADDRESS:=ray-head:6379}"
  local cmd=(ray start --block --disable-usage-stats "--address=$RAY_HEAD_ADDRESS")
  add_flags cmd "${NODE_FLAGS[@]}"
  run "${cmd[@]}" "$@"
}

role_mlflow() {
  : "${MLFLOW_BACKEND_STORE_URI:=sqlite:///$STATE_DIR/mlflow/mlflow.db}"
  : "${MLFLOW_ARTIFACTS_DESTINATION:=$STATE_DIR/mlflow/artifacts}"
  : "${MLFLOW_HOST:=0.0.0.0}" "${MLFLOW_PORT:=5000}" "${MLFLOW_WORKERS:=2}"
  # The server's own job runner (huey workers) is not used by sedtune.
  export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
  if [[ $MLFLOW_BACKEND_STORE_URI == sqlite:///* && ${SEDTUNE_ENTRYPOINT_DRY_RUN:-0} != 1 ]]; then
    mkdir -p "$(dirname "${MLFLOW_BACKEND_STORE_URI#sqlite:///}")"
  fi
  local cmd=(mlflow server "--backend-store-uri=$MLFLOW_BACKEND_STORE_URI" --serve-artifacts
             "--artifacts-destination=$MLFLOW_ARTIFACTS_DESTINATION" "--host=$MLFLOW_HOST"
             "--port=$MLFLOW_PORT" "--workers=$MLFLOW_WORKERS")
  add_flags cmd MLFLOW_SERVER_ALLOWED_HOSTS:--allowed-hosts
  run "${cmd[@]}" "$@"
}

role_api() {
  ray_auth strict  # the service is a client of the Ray Jobs API
  : "${SEDTUNE_HOST:=0.0.0.0}" "${SEDTUNE_PORT:=8000}" "${SEDTUNE_VERBOSE:=1}"
  local cmd=(sedtune)
  [[ $SEDTUNE_VERBOSE == 1 ]] && cmd+=(-v)
  cmd+=(serve "--host=$SEDTUNE_HOST" "--port=$SEDTUNE_PORT")
  add_flags cmd SEDTUNE_CONFIG:--config
  run "${cmd[@]}" "$@"
}

role_job() {
  ray_auth strict
  [[ $# -gt 0 ]] || die "job: give a spec file (job SPEC [tune options]) or --job-id ID --spec-file FILE"
  if [[ $1 == --job-id ]]; then
    run python -m service.jobrun "$@"
  fi
  local spec=$1
  shift
  local cmd=(sedtune tune "$spec" "--address=${RAY_ADDRESS:-auto}")
  if [[ -n ${SEDTUNE_JOB_OUTPUT_ROOT:-} ]]; then
    cmd+=("--output=$SEDTUNE_JOB_OUTPUT_ROOT/$(date -u +%Y%m%dT%H%M%SZ)")
  fi
  run "${cmd[@]}" "$@"
}

# ---------------------------------------------------------------- health

probe_host() {
  case ${1:-} in
    "" | 0.0.0.0 | "::" | "[::]") echo 127.0.0.1 ;;
    *) echo "$1" ;;
  esac
}

# GET a URL; succeed on 200 (and, with $2, when the body contains it).
http_ok() {
  python3 - "$1" "${2:-}" <<'PY'
import sys
import urllib.request

url, expect = sys.argv[1], sys.argv[2]
try:
    with urllib.request.urlopen(url, timeout=5) as r:
        body = r.read(65536).decode("utf-8", "replace")
        ok = r.status == 200 and expect in body
except Exception as e:  # any failure is "unhealthy"
    print(f"healthcheck: {url}: {e}", file=sys.stderr)
    sys.exit(1)
if not ok:
    print(f"healthcheck: {url}: unexpected answer {body[:200]!r}", file=sys.stderr)
sys.exit(0 if ok else 1)
PY
}

# The role this container was started with: $SEDTUNE_ROLE, else the argument after this script in
# PID 1's command line (tini -g -- .../entrypoint.sh ROLE; SEDTUNE_INIT_CMDLINE names another file).
container_role() {
  if [[ -n ${SEDTUNE_ROLE:-} ]]; then echo "$SEDTUNE_ROLE"; return; fi
  local args=() a next=0 cmdline=${SEDTUNE_INIT_CMDLINE:-/proc/1/cmdline}
  [[ -r $cmdline ]] && mapfile -d '' args < "$cmdline"
  for a in "${args[@]}"; do
    if [[ $next == 1 ]]; then echo "$a"; return; fi
    [[ $a == */entrypoint.sh ]] && next=1
  done
  echo unknown
}

healthcheck() {
  local role=${1:-$(container_role)}
  case $role in
    ray-head)
      http_ok "http://$(probe_host "${RAY_DASHBOARD_HOST:-}"):${RAY_DASHBOARD_PORT:-8265}/api/gcs_healthz" success ;;
    ray-worker)  # the dashboard agent listens on the node's IP and on loopback
      http_ok "http://127.0.0.1:${RAY_DASHBOARD_AGENT_LISTEN_PORT:-52365}/api/local_raylet_healthz" success ;;
    mlflow)
      http_ok "http://$(probe_host "${MLFLOW_HOST:-}"):${MLFLOW_PORT:-5000}/health" ;;
    api)
      http_ok "http://$(probe_host "${SEDTUNE_HOST:-}"):${SEDTUNE_PORT:-8000}/health" ;;
    *) exit 0 ;;  # jobs and one-off commands have nothing to probe
  esac
}

# ---------------------------------------------------------------- dispatch

if [[ $# -eq 0 ]]; then
  die "usage: entrypoint.sh ROLE [ARGS] with ROLE one of: $ROLES, healthcheck [ROLE]; or any command"
fi
role=$1
shift
case $role in
  ray-head) role_ray_head "$@" ;;
  ray-worker) role_ray_worker "$@" ;;
  mlflow) role_mlflow "$@" ;;
  api) role_api "$@" ;;
  job) role_job "$@" ;;
  healthcheck) healthcheck "$@" ;;
  *)
    ray_auth lenient
    run "$role" "$@" ;;
esac
