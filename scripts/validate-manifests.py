#!/usr/bin/env python3
"""Validates manifests rendered by `helm template` (used by scripts/check-deploy.sh).

For every document of every file given:
  * Kubernetes kinds: kubernetes-validate against the offline schemas of --kube-version,
    strict (unknown fields are errors).
  * Prometheus Operator kinds (ServiceMonitor, PrometheusRule): kubernetes-validate has no
    schemas for CRDs, so their structure is checked here instead (said in the output).
  * Pod policy: non-root, read-only root filesystem, no privilege escalation, all
    capabilities dropped, seccomp RuntimeDefault, resources, probes on long-running pods.
  * References inside the render: Service/PDB/NetworkPolicy/ServiceMonitor selectors match
    pods or Services, named ports exist, the HPA target exists, envFrom ConfigMaps exist,
    a hook Job only reads Secrets that exist before it (hooks with a lower weight, or
    Secrets the chart does not create).
  * Env drift: every variable a commerce container gets is one src/config.rs reads.

Needs PyYAML and kubernetes-validate (the .tools venv has both).
"""

import argparse
import pathlib
import re
import sys

import kubernetes_validate
import yaml

STANDARD_ENV = {"RUST_LOG", "RUST_BACKTRACE"}
CRD_GROUPS = ("monitoring.coreos.com/",)
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}

errors = []


def error(where, message):
    errors.append(f"{where}: {message}")


def config_vars(path):
    """The variable names the service reads: the "NAME" of every env.<method>("NAME" call of
    src/config.rs, plus std::env::var("NAME") / var_os("NAME") anywhere in src/."""
    text = open(path, encoding="utf-8").read()
    names = set(re.findall(r'\benv\s*\.\s*[a-z_]+\s*\(\s*"([A-Z][A-Z0-9_]*)"', text))
    if len(names) < 10:
        sys.exit(f"{path}: found only {sorted(names)}; has the env.<method>(\"NAME\") style changed?")
    for rs in pathlib.Path(path).parent.rglob("*.rs"):
        names |= set(re.findall(r'env::var(?:_os)?\("([A-Z][A-Z0-9_]*)"', rs.read_text(encoding="utf-8")))
    return names


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_templates(docs):
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield doc, doc["spec"]["template"]


def check_pod_policy(where, kind, template):
    spec = template["spec"]
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        error(where, "pod securityContext.runAsNonRoot must be true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        error(where, "pod seccompProfile must be RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        error(where, "automountServiceAccountToken must be false (the service never calls the API)")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            error(cw, "allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            error(cw, "readOnlyRootFilesystem must be true")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            error(cw, "capabilities must drop ALL")
        if not c.get("resources", {}).get("requests"):
            error(cw, "resources.requests missing")
        if not c.get("resources", {}).get("limits", {}).get("memory"):
            error(cw, "resources.limits.memory missing")
        image = c.get("image", "")
        if "@" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
            error(cw, f"image {image!r} needs a pinned tag or digest")
        if kind != "Job":
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    error(cw, f"{probe} missing")


def check_crd(where, doc, services):
    kind, spec = doc["kind"], doc.get("spec") or {}
    if kind == "ServiceMonitor":
        selector = spec.get("selector", {}).get("matchLabels", {})
        targets = [s for s in services if matches(selector, s["metadata"].get("labels", {}))]
        if len(targets) != 1:
            error(where, f"selector {selector} matches {len(targets)} Services, expected 1")
        endpoints = spec.get("endpoints") or []
        if not endpoints:
            error(where, "no endpoints")
        for ep in endpoints:
            ports = {p.get("name") for t in targets for p in t["spec"]["ports"]}
            if ep.get("port") not in ports:
                error(where, f"endpoint port {ep.get('port')!r} is not a port name of {sorted(ports)}")
            if not str(ep.get("path", "")).startswith("/"):
                error(where, "endpoint path must start with /")
    elif kind == "PrometheusRule":
        groups = spec.get("groups") or []
        if not groups:
            error(where, "no rule groups")
        for g in groups:
            if not g.get("name") or not g.get("rules"):
                error(where, f"group {g.get('name')!r} needs a name and rules")
            for r in g.get("rules", []):
                if not (r.get("alert") or r.get("record")) or not isinstance(r.get("expr"), str):
                    error(where, f"rule {r} needs alert/record and a string expr")
                if r.get("alert") and r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                    error(where, f"alert {r['alert']} needs labels.severity critical/warning/info")
    else:
        error(where, f"unknown CRD kind {kind}")


def hook_weight(doc):
    annotations = doc["metadata"].get("annotations") or {}
    if "helm.sh/hook" not in annotations:
        return None
    return int(annotations.get("helm.sh/hook-weight", "0"))


def check_references(docs, known_vars):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    pods = list(pod_templates(docs))
    for svc in by_kind.get("Service", {}).values():
        where = f"Service/{svc['metadata']['name']}"
        selected = [t for _, t in pods if matches(svc["spec"].get("selector", {}), t["metadata"].get("labels", {}))]
        if not selected:
            error(where, "selector matches no pod template")
        names = {p.get("name") for t in selected for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str) and target not in names:
                error(where, f"targetPort {target!r} is no container port name of the selected pods")
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for obj in by_kind.get(kind, {}).values():
            selector = obj["spec"].get("selector" if kind == "PodDisruptionBudget" else "podSelector", {})
            if not any(matches(selector.get("matchLabels", {}), t["metadata"].get("labels", {})) for _, t in pods):
                error(f"{kind}/{obj['metadata']['name']}", "selector matches no pod template")
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["name"] not in by_kind.get(ref["kind"], {}):
            error(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}", f"target {ref['kind']}/{ref['name']} not rendered")
        elif "replicas" in by_kind[ref["kind"]][ref["name"]]["spec"]:
            error(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}", "the target also sets replicas (they fight)")
    for ing in by_kind.get("Ingress", {}).values():
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                svc = by_kind.get("Service", {}).get(backend["name"])
                if not svc or backend["port"].get("name") not in {p["name"] for p in svc["spec"]["ports"]}:
                    error(f"Ingress/{ing['metadata']['name']}", f"backend {backend} not rendered")
    configmaps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    for workload, template in pods:
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        weight = hook_weight(workload)
        for c in template["spec"]["containers"]:
            env_names = {e["name"] for e in c.get("env", [])}
            for source in c.get("envFrom", []):
                ref = source.get("configMapRef")
                if ref:
                    if ref["name"] not in configmaps:
                        error(where, f"envFrom ConfigMap {ref['name']} not rendered")
                    else:
                        env_names |= set((configmaps[ref["name"]].get("data") or {}).keys())
                if source.get("secretRef"):
                    error(where, "envFrom secretRef hides which variables are set: use secretKeyRef")
            unknown = sorted(n for n in env_names - known_vars - STANDARD_ENV if not n.startswith("OTEL_"))
            if unknown:
                error(where, f"container {c['name']} sets variables the service does not read: {unknown}")
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if weight is not None and ref and ref["name"] in secrets:
                    secret_weight = hook_weight(secrets[ref["name"]])
                    if secret_weight is None or secret_weight >= weight:
                        error(where, f"hook reads Secret {ref['name']}, which does not exist before the hook runs")


def validate_file(path, version):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    counts = {}
    services = [d for d in docs if d.get("kind") == "Service"]
    for doc in docs:
        kind = doc.get("kind")
        where = f"{path}: {kind}/{doc.get('metadata', {}).get('name')}"
        if not kind or not doc.get("apiVersion") or not doc.get("metadata", {}).get("name"):
            error(where, "apiVersion, kind and metadata.name are required")
            continue
        counts[kind] = counts.get(kind, 0) + 1
        if doc["apiVersion"].startswith(CRD_GROUPS):
            print(f"  note: {kind} ({doc['apiVersion']}) is a CRD without an offline schema: structure checked here instead")
            check_crd(where, doc, services)
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            error(where, f"schema {version}: {'.'.join(str(p) for p in e.path)}: {e.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
            error(where, e.message)
        if kind in WORKLOADS:
            check_pod_policy(where, kind, doc["spec"]["template"])
    return docs, counts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kube-version", required=True)
    parser.add_argument("--config-rs", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    known = config_vars(args.config_rs)
    for path in args.files:
        docs, counts = validate_file(path, args.kube_version)
        check_references(docs, known)
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        print(f"  {path}: {len(docs)} documents ({summary})")
    if errors:
        print("\n".join(["FAILED:"] + errors), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
