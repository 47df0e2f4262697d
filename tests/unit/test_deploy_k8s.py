"""deploy/k8s: every overlay renders with kustomize, and every object it renders validates.

- Core kinds: against the Kubernetes 1.32 OpenAPI schemas bundled offline by ``kubernetes-validate``,
  strict (an unknown field is an error, as kubectl's default server-side field validation makes it).
- ray.io kinds: against the openAPIV3Schema of KubeRay's CRDs in ../shared/schemas/kuberay
  (jsonschema, Draft 4 like OpenAPI v3; ``x-kubernetes-*`` keywords are ignored, except that unknown
  fields are errors outside ``x-kubernetes-preserve-unknown-fields``, as the API server prunes or
  rejects them). Their metadata and embedded Pod templates also go through the core schemas, and
  RayJob manifests embedded in ConfigMaps are validated too. CEL rules (``x-kubernetes-validations``)
  are not evaluated.
- The deployment's own rules: requests, limits and probes, pinned images, containers of the
  project image run an entrypoint role, every reference resolves, one nightly job in two forms.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.unit.test_deploy_entrypoint import IMAGE_SCRIPT, ROLES, allowed_env

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CRDS = ROOT.parent / "shared" / "schemas" / "kuberay"
K8S_VERSION = "1.32.0"  # the kubectl/kustomize of these machines
BUILDS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}
PROJECT_IMAGE = {"base": "sedtune:0.1.0", "dev": "sedtune:0.1.0",
                 "prod": "registry.example.com/sedtune:0.1.0"}
EXTERNAL_SECRETS = {"prod": {"sedtune-secrets", "sedtune-ray-auth"}}  # created by hand (README)
LONG_RUNNING = ("Deployment", "StatefulSet", "RayCluster")
Doc = dict[str, Any]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is not installed: pip install kubernetes-validate==1.37.0 "
                    "(it bundles the Kubernetes OpenAPI schemas; add it to deploy/requirements.lock)")
    return kubernetes_validate


@functools.cache
def render(build: str) -> tuple[Doc, ...]:
    """``kubectl kustomize`` of a build directory, as parsed objects."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: the kustomize builds cannot be rendered here")
    p = subprocess.run([kubectl, "kustomize", str(BUILDS[build])], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, f"kubectl kustomize {BUILDS[build]} failed:\n{p.stderr}"
    return tuple(d for d in yaml.safe_load_all(p.stdout) if d)


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> a validator of the CRD's openAPIV3Schema, unknown fields rejected."""
    if not CRDS.is_dir():
        pytest.fail(f"the KubeRay CRD schemas are missing: {CRDS} (../shared/schemas/kuberay)")
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        with open(path) as f:
            crd = yaml.load(f, Loader=_Loader)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            out[(f"{group}/{version['name']}", kind)] = jsonschema.Draft4Validator(schema)
    return out


def _strict(node: Any) -> Any:
    """Reject unknown fields wherever the schema lists the fields and does not keep unknown ones."""
    if isinstance(node, dict):
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        for v in node.values():
            _strict(v)
    elif isinstance(node, list):
        for v in node:
            _strict(v)
    return node


def is_ray(doc: Doc) -> bool:
    return str(doc["apiVersion"]).startswith("ray.io/")


def embedded_manifests(docs: tuple[Doc, ...]) -> list[Doc]:
    """Kubernetes objects held as text in ConfigMaps (the CronJob fallback's RayJob)."""
    out = []
    for d in docs:
        if d["kind"] == "ConfigMap":
            for text in (d.get("data") or {}).values():
                if not re.search(r"^apiVersion:", text, re.M) or not re.search(r"^kind:", text, re.M):
                    continue
                obj = yaml.safe_load(text)
                if isinstance(obj, dict) and "apiVersion" in obj and "kind" in obj:
                    out.append(obj)
    return out


def pod_templates(doc: Doc) -> Iterator[tuple[str, Doc]]:
    """(where, Pod template) of a workload, core or ray.io."""
    kind, spec = doc["kind"], dict(doc.get("spec") or {})
    if kind in ("Deployment", "StatefulSet", "Job"):
        yield kind, spec["template"]
    elif kind == "CronJob":
        yield kind, spec["jobTemplate"]["spec"]["template"]
    elif kind == "RayCluster":
        yield "head", spec["headGroupSpec"]["template"]
        for g in spec.get("workerGroupSpecs", []):
            yield f"worker group {g['groupName']}", g["template"]
    elif kind in ("RayJob", "RayCronJob"):
        job: Doc = spec["jobTemplate"] if kind == "RayCronJob" else spec
        if "submitterPodTemplate" in job:
            yield "submitter", job["submitterPodTemplate"]
        if "rayClusterSpec" in job:
            yield from pod_templates({"kind": "RayCluster", "spec": job["rayClusterSpec"]})


def containers(doc: Doc) -> Iterator[tuple[str, Doc]]:
    for where, tmpl in pod_templates(doc):
        for c in tmpl["spec"].get("containers", []) + tmpl["spec"].get("initContainers", []):
            yield f"{doc['kind']}/{doc.get('metadata', {}).get('name')} {where} {c['name']}", c


def is_project_image(image: str) -> bool:
    return image.split("@")[0].rsplit(":", 1)[0].rsplit("/", 1)[-1] == "sedtune"


ALL_BUILDS = pytest.mark.parametrize("build", list(BUILDS))


# ------------------------------------------------------------------------------------------ schemas


@ALL_BUILDS
def test_core_objects_validate_against_the_kubernetes_schemas(build: str) -> None:
    kv = _kubernetes_validate()
    docs = render(build)
    for d in (*docs, *embedded_manifests(docs)):
        name = f"{d['kind']}/{d['metadata'].get('name') or d['metadata'].get('generateName')}"
        if is_ray(d):  # the core parts of custom resources: metadata and Pod templates
            meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": d["metadata"]}
            kv.validate(meta, K8S_VERSION, strict=True)
            for where, tmpl in pod_templates(d):
                wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                           "template": tmpl}
                try:
                    kv.validate(wrapped, K8S_VERSION, strict=True)
                except kv.ValidationError as e:
                    pytest.fail(f"{build}: {name} {where} Pod template: {e.message} at {list(e.path)}")
            continue
        try:
            kv.validate(d, K8S_VERSION, strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{build}: {name}: {e.message} at {list(e.path)}")


@ALL_BUILDS
def test_ray_objects_validate_against_the_kuberay_crds(build: str) -> None:
    docs = render(build)
    ray_docs = [d for d in (*docs, *embedded_manifests(docs)) if is_ray(d)]
    assert {d["kind"] for d in ray_docs} >= {"RayCluster"}
    for d in ray_docs:
        validator = crd_validators().get((d["apiVersion"], d["kind"]))
        assert validator is not None, f"no CRD schema for {d['apiVersion']} {d['kind']}"
        errors = sorted(validator.iter_errors(d), key=lambda e: list(e.path))
        assert not errors, f"{build}: {d['kind']}/{d['metadata']}: " + "; ".join(
            f"{list(e.path)}: {e.message}" for e in errors[:5])


def test_the_validators_reject_what_the_api_server_would() -> None:
    kv = _kubernetes_validate()
    docs = {d["kind"]: d for d in render("dev")}
    bad = copy.deepcopy(docs["RayCluster"])
    bad["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3  # typo
    assert list(crd_validators()[("ray.io/v1", "RayCluster")].iter_errors(bad))
    bad = copy.deepcopy(docs["RayCluster"])
    bad["spec"]["autoscalerOptions"]["upscalingMode"] = "Fast"  # not in the enum
    assert list(crd_validators()[("ray.io/v1", "RayCluster")].iter_errors(bad))
    cron = yaml.safe_load((K8S / "components" / "nightly-raycronjob" / "raycronjob.yaml").read_text())
    del cron["spec"]["schedule"]
    assert list(crd_validators()[("ray.io/v1", "RayCronJob")].iter_errors(cron))
    bad = copy.deepcopy(docs["Deployment"])
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)


# ------------------------------------------------------------------------------------------ rules


@ALL_BUILDS
def test_every_container_has_requests_limits_and_long_running_ones_probes(build: str) -> None:
    for d in render(build):
        for name, c in containers(d):
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(kind) or {}), f"{build}: {name}: no {kind}"
            if d["kind"] in LONG_RUNNING:
                assert "livenessProbe" in c and "readinessProbe" in c, f"{build}: {name}: probes"
        if d["kind"] == "RayCluster":
            auto = d["spec"]["autoscalerOptions"]["resources"]
            assert auto["requests"] and auto["limits"], "the autoscaler sidecar's resources"


@ALL_BUILDS
def test_images_are_pinned(build: str) -> None:
    for d in (*render(build), *embedded_manifests(render(build))):
        for name, c in containers(d):
            image = c["image"]
            if is_project_image(image):
                assert image == PROJECT_IMAGE[build], f"{build}: {name}: {image}"
                assert c.get("imagePullPolicy") != "Always"
            else:  # third-party: an exact version, by digest where we know it
                tag = image.split("@")[0].rsplit(":", 1)
                assert len(tag) == 2 and re.fullmatch(r"v?\d+\.\d+(\.\d+)?(-[a-z0-9]+)?", tag[1]), image
                if image.startswith("postgres"):
                    assert re.search(r"@sha256:[0-9a-f]{64}$", image), image


@ALL_BUILDS
def test_project_containers_run_an_entrypoint_role(build: str) -> None:
    allowed = allowed_env() | {"RAY_AUTH_TOKEN", "RAY_AUTH_MODE"}
    seen = set()
    for d in render(build):
        for name, c in containers(d):
            if not is_project_image(c["image"]):
                continue
            # the image's ENTRYPOINT (tini + deploy/entrypoint.sh) runs: no command override
            assert "command" not in c, f"{build}: {name} overrides the entrypoint"
            assert c["args"][0] in ROLES - {"job"}, f"{build}: {name}: args {c['args']}"
            seen.add(c["args"][0])
            env = {e["name"] for e in c.get("env", [])}
            assert env <= allowed, f"{build}: {name}: variables nothing reads: {env - allowed}"
            for probe in ("livenessProbe", "readinessProbe"):
                cmd = c[probe].get("exec", {}).get("command")
                if cmd:  # exec probes: the entrypoint's healthcheck of the container's own role
                    assert cmd == [IMAGE_SCRIPT, "healthcheck", c["args"][0]], f"{build}: {name}: {cmd}"
        if d["kind"] == "RayCluster":
            assert d["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    assert seen == {"ray-head", "ray-worker", "mlflow", "api"}


def _ray_jobs(docs: tuple[Doc, ...]) -> list[tuple[str, Doc]]:
    out = []
    for d in (*docs, *embedded_manifests(docs)):
        if d["kind"] == "RayJob":
            out.append((f"RayJob/{d['metadata'].get('name') or d['metadata']['generateName']}", d["spec"]))
        elif d["kind"] == "RayCronJob":
            out.append((f"RayCronJob/{d['metadata']['name']}", d["spec"]["jobTemplate"]))
    return out


@ALL_BUILDS
def test_every_reference_resolves(build: str) -> None:
    docs = render(build)
    names: dict[str, set[str]] = {}
    for d in docs:
        names.setdefault(d["kind"], set()).add(d["metadata"]["name"])
    secrets = names.get("Secret", set()) | EXTERNAL_SECRETS.get(build, set())
    assert not EXTERNAL_SECRETS.get(build, set()) & names.get("Secret", set())
    for d in docs:
        where = f"{build}: {d['kind']}/{d['metadata']['name']}"
        for tmpl_where, tmpl in pod_templates(d):
            spec = tmpl["spec"]
            for v in spec.get("volumes", []):
                if "configMap" in v:
                    assert v["configMap"]["name"] in names.get("ConfigMap", set()), (where, v)
                if "persistentVolumeClaim" in v:
                    claim = v["persistentVolumeClaim"]["claimName"]
                    assert claim in names["PersistentVolumeClaim"], (where, v)
                if "secret" in v:
                    assert v["secret"]["secretName"] in secrets, (where, v)
            mounts = {m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
            claims = {t["metadata"]["name"] for t in (d.get("spec") or {}).get("volumeClaimTemplates", [])}
            assert mounts <= {v["name"] for v in spec.get("volumes", [])} | claims, (where, tmpl_where)
            for c in spec["containers"]:
                for e in c.get("env", []):
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        assert ref["name"] in secrets, (where, e)
            if "serviceAccountName" in spec:
                assert spec["serviceAccountName"] in names["ServiceAccount"], where
        if d["kind"] == "Service":  # selects the Pods of some workload, on ports they declare
            sel = d["spec"]["selector"]
            targets = [t for w in docs for _, t in pod_templates(w)
                       if sel.items() <= (t.get("metadata", {}).get("labels") or {}).items()]
            assert targets, f"{where}: selects no Pod"
            ports = {p["name"] for t in targets for c in t["spec"]["containers"] for p in c.get("ports", [])}
            assert {p["targetPort"] for p in d["spec"]["ports"]} <= ports, where
        if d["kind"] == "RayCluster":
            assert d["spec"]["authOptions"]["secretName"] in secrets
        if d["kind"] == "RoleBinding":
            assert d["roleRef"]["name"] in names["Role"]
            assert {s["name"] for s in d["subjects"]} <= names["ServiceAccount"]
    for name, job in _ray_jobs(docs):
        assert job["clusterSelector"]["ray.io/cluster"] in names["RayCluster"], f"{build}: {name}"


@ALL_BUILDS
def test_ray_jobs_run_a_spec_file_through_the_entrypoint(build: str) -> None:
    from service.tuning.spec import load_spec

    docs = render(build)
    specs = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sedtune-job-specs")
    head = next(d for d in docs if d["kind"] == "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]
    mount = next(m["mountPath"] for m in head["containers"][0]["volumeMounts"] if m["name"] == "specs")
    for name, job in _ray_jobs(docs):
        m = re.search(rf"exec {re.escape(IMAGE_SCRIPT)} job (\S+?)'?$|^{re.escape(IMAGE_SCRIPT)} job (\S+)$",
                      job["entrypoint"])
        assert m, f"{build}: {name}: the driver must be `{IMAGE_SCRIPT} job SPEC`: {job['entrypoint']}"
        spec_path = Path(m.group(1) or m.group(2))
        assert str(spec_path.parent) == mount and spec_path.name in specs["data"], (name, spec_path)
    for key, text in specs["data"].items():  # every spec is valid
        path = K8S / "base" / "files" / key
        assert path.read_text() == text
        load_spec(str(path))


def test_the_nightly_raycronjob_and_the_cronjob_fallback_run_the_same_job() -> None:
    cron = yaml.safe_load((K8S / "components" / "nightly-raycronjob" / "raycronjob.yaml").read_text())
    job_file = K8S / "components" / "nightly-cronjob" / "files" / "nightly-rayjob.yaml"
    job = yaml.safe_load(job_file.read_text())
    assert job["kind"] == "RayJob" and job["metadata"]["generateName"]
    assert cron["spec"]["jobTemplate"] == job["spec"]
    fallback = next(d for d in render("dev") if d["kind"] == "CronJob")
    assert (fallback["spec"]["schedule"], fallback["spec"]["timeZone"]) == (cron["spec"]["schedule"],
                                                                           cron["spec"]["timeZone"])
    assert fallback["spec"]["concurrencyPolicy"] == "Forbid"
    c = fallback["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["kubectl"] and c["args"][:2] == ["create", "-f"]
    role = next(d for d in render("dev") if d["kind"] == "Role")
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create"]}]


def test_the_api_settings_configmap_is_a_valid_settings_file() -> None:
    from service.server.settings import load_settings

    docs = render("dev")
    s = load_settings(str(K8S / "base" / "files" / "sedtune-api.yaml"), environ={})
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    assert s.ray_address == f"http://{cluster['metadata']['name']}-head-svc:8265"  # KubeRay's head Service
    mlflow = services["sedtune-mlflow"]["spec"]["ports"][0]["port"]
    assert s.tracking_uri == f"http://sedtune-mlflow:{mlflow}"
    for where, tmpl in pod_templates(cluster):  # Ray Pods see data and outputs at the service's paths
        paths = {m["mountPath"] for m in tmpl["spec"]["containers"][0]["volumeMounts"]}
        assert set(s.data_roots) | set(s.output_roots) <= paths, where
        env = {e["name"]: e.get("value") for e in tmpl["spec"]["containers"][0].get("env", [])}
        assert env["MLFLOW_TRACKING_URI"] == s.tracking_uri, where


def test_overlays_differ_as_intended() -> None:
    lock = (ROOT / "deploy" / "requirements.lock").read_text()
    ray_version = re.search(r"^ray==(\S+)$", lock, re.M)
    assert ray_version
    by_kind = {b: {d["kind"]: d for d in render(b)} for b in ("dev", "prod")}
    for b, docs in by_kind.items():
        rc = docs["RayCluster"]["spec"]
        assert rc["enableInTreeAutoscaling"] is True and rc["rayVersion"] == ray_version.group(1), b
        assert rc["authOptions"]["mode"] == "token"
        api = next(d for d in render(b)
                   if d["kind"] == "Deployment" and d["metadata"]["name"] == "sedtune-api")
        assert api["spec"]["replicas"] == 1 and api["spec"]["strategy"]["type"] == "Recreate"  # one scheduler
    dev, prod = by_kind["dev"]["RayCluster"]["spec"], by_kind["prod"]["RayCluster"]["spec"]
    groups = [(g["replicas"], g["minReplicas"], g["maxReplicas"]) for g in dev["workerGroupSpecs"]]
    assert groups == [(1, 1, 1)]
    assert prod["workerGroupSpecs"][0]["maxReplicas"] > 1
    cpu = [rc["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
           for rc in (dev, prod)]
    assert float(cpu[0]) < float(cpu[1])
    assert "RayCronJob" in by_kind["prod"] and "CronJob" not in by_kind["prod"]
    assert "CronJob" in by_kind["dev"] and "RayCronJob" not in by_kind["dev"]
    assert "Secret" not in by_kind["prod"]  # never overwrite the real secrets with placeholders
    assert {d["metadata"]["namespace"] for d in render("prod") if d["kind"] != "Namespace"} == {"sedtune"}
    assert {d["metadata"]["namespace"] for d in render("dev") if d["kind"] != "Namespace"} == {"sedtune-dev"}


def test_every_component_is_used_by_an_overlay() -> None:
    used = set()
    for overlay in ("dev", "prod"):
        k = yaml.safe_load((BUILDS[overlay] / "kustomization.yaml").read_text())
        used |= {(BUILDS[overlay] / c).resolve() for c in k.get("components", [])}
    assert used == {p.resolve() for p in (K8S / "components").iterdir() if p.is_dir()}
