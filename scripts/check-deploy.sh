#!/usr/bin/env bash
# Deployment checks, offline (CI runs this from .ci/run):
#   1. helm lint --strict of the chart with default, production-like and demo values;
#   2. helm template of each, every manifest validated against the Kubernetes schemas
#      (kubernetes-validate, strict) plus pod policy, cross references and env drift
#      (scripts/validate-manifests.py; CRDs are checked structurally, said in the output);
#   3. the chart's guards: renders that must fail do, with the intended message;
#   4. the documented first install: README's image tag = the chart's default image = compose's,
#      the Dockerfile builds the crate's binary as non-root from a context holding every
#      compile-time input, and the chart's JWT issuer is the service's
#      (scripts/check-first-install.py);
#   5. compose.yaml, the Prometheus config and rules, the Grafana provisioning and dashboard
#      parse, and every file they mount exists.
# Takes a few seconds once the tools are installed (scripts/install-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/install-tools.sh)"

KUBE_VERSION="${KUBE_VERSION:-1.30.0}"
chart=helm/commerce
py=.tools/venv/bin/python
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
start=$(date +%s)
step() { echo "--- $* ($(( $(date +%s) - start ))s)"; }

# Helm warns about nothing we care for on stderr; keep real errors visible.
render() { # name, extra helm args...
  local name="$1"; shift
  helm template commerce "$chart" --namespace commerce --kube-version "$KUBE_VERSION" "$@" >"$out/$name.yaml"
}

step "helm lint"
helm lint --strict "$chart" --kube-version "$KUBE_VERSION"
for values in "$chart"/ci/*-values.yaml; do
  helm lint --strict "$chart" --kube-version "$KUBE_VERSION" -f "$values"
done

step "helm template + kubernetes-validate $KUBE_VERSION"
render default
for values in "$chart"/ci/*-values.yaml; do
  render "$(basename "$values" .yaml)" -f "$values"
done
"$py" scripts/validate-manifests.py --kube-version "$KUBE_VERSION" --config-rs src/config.rs "$out"/*.yaml

step "the documented first install (image tag, Dockerfile context, issuer)"
"$py" scripts/check-first-install.py "$out/default.yaml"

step "what each render must contain"
expect() { # file, grep -E pattern, why
  grep -Eq "$2" "$out/$1.yaml" || { echo "FAILED: $1 render lacks /$2/: $3" >&2; exit 1; }
}
refuse() { # file, grep -E pattern, why
  if grep -Eq "$2" "$out/$1.yaml"; then echo "FAILED: $1 render has /$2/: $3" >&2; exit 1; fi
}
expect default 'ENVIRONMENT: "development"' "no keys: development"
expect default 'RUN_MIGRATIONS: "true"' "the embedded demo migrates at start"
refuse default 'kind: Job' "no migration Job without a database"
expect production-values 'ENVIRONMENT: "production"' "a public key makes it production"
expect production-values 'RUN_MIGRATIONS: "false"' "pods leave migrations to the Job"
expect production-values 'helm.sh/hook: pre-install,pre-upgrade' "the migration Job is a hook"
expect production-values 'kind: HorizontalPodAutoscaler' "HPA on"
expect production-values 'kind: ServiceMonitor' "ServiceMonitor on"
expect production-values 'kind: PrometheusRule' "PrometheusRule on"
expect production-values 'grafana_dashboard: "1"' "dashboard ConfigMap labelled for the sidecar"
refuse production-values 'name: commerce-stubs' "no stubs in production"
expect demo-values 'PAYMENT_SERVICE_URL: "http://commerce-stubs:8085"' "stubs on: the saga calls them"
expect demo-values 'args: \["stubs"\]' "the stubs Deployment runs commerce stubs"

step "NOTES.txt renders"
# `helm template` skips NOTES.txt: render it through tpl in a scratch copy of the chart.
cp -r "$chart" "$out/notes-chart"
mv "$out/notes-chart/templates/NOTES.txt" "$out/notes-chart/notes.src"
printf 'notes: |\n{{- tpl (.Files.Get "notes.src") . | nindent 2 }}\n' >"$out/notes-chart/templates/notes.yaml"
notes() { helm template commerce "$out/notes-chart" --kube-version "$KUBE_VERSION" --show-only templates/notes.yaml "$@"; }
notes | grep -q "WARNING: no database is configured" || { echo "FAILED: default NOTES lack the demo warning" >&2; exit 1; }
notes -f "$chart/ci/production-values.yaml" | grep -q "ENVIRONMENT=production" || { echo "FAILED: production NOTES" >&2; exit 1; }
notes -f "$chart/ci/demo-values.yaml" | grep -q "stubs run as commerce-stubs:8085" || { echo "FAILED: demo NOTES" >&2; exit 1; }

step "renders that must fail"
must_fail() { # message, helm args...
  local message="$1"; shift
  local err
  if err="$(helm template commerce "$chart" --kube-version "$KUBE_VERSION" "$@" 2>&1 >/dev/null)"; then
    echo "FAILED: rendering with [$*] should fail with: $message" >&2; exit 1
  fi
  grep -qF "$message" <<<"$err" || { echo "FAILED: [$*] failed, but not with '$message':" >&2; echo "$err" >&2; exit 1; }
  echo "  refused as intended: $*"
}
must_fail "needs JWT verification keys" --set environment=production --set database.url=postgres://h/db --set piiMasterKey="$(printf 'a%.0s' {1..64})"
must_fail "shorter than 32 bytes" --set environment=production --set auth.jwtSecret=short
must_fail "needs PostgreSQL" --set environment=production --set auth.jwks=a-jwks-document
must_fail "needs piiMasterKey" --set environment=production --set auth.jwks=a-jwks-document --set database.url=postgres://h/db
must_fail "needs the sibling services" --set auth.jwks=a-jwks-document --set database.url=postgres://h/db --set piiMasterKey="$(printf 'b%.0s' {1..64})"
must_fail "replicaCount must be 1" --set replicaCount=3
must_fail "set redis.url" --set replicaCount=3 --set database.url=postgres://h/db
must_fail "set all three" --set siblings.paymentUrl=http://payment:8080
must_fail "piiMasterKey" --set piiMasterKey=not-hex
must_fail "database.url" --set database.url=mysql://h/db
must_fail "readOnlyRootFilesystem" --set securityContext.readOnlyRootFilesystem=false
must_fail "Additional property replicas is not allowed" --set replicas=3

step "compose, Prometheus, Grafana"
"$py" deploy/grafana/dashboard.py --check
"$py" - <<'PY'
import json, os, sys, yaml

def fail(msg):
    sys.exit(f"FAILED: {msg}")

compose = yaml.safe_load(open("compose.yaml"))
services = compose.get("services") or {}
for name in ("commerce", "stubs", "postgres", "redis", "jaeger", "prometheus", "grafana"):
    if name not in services:
        fail(f"compose.yaml has no service {name}")
for name, svc in services.items():
    if not (svc.get("image") or svc.get("build")):
        fail(f"compose service {name} has neither image nor build")
    for volume in svc.get("volumes", []):
        source = volume.split(":", 1)[0]
        if source.startswith((".", "/")) and not os.path.exists(source):
            fail(f"compose service {name} mounts missing {source}")
    for dep in svc.get("depends_on") or []:
        if dep not in services:
            fail(f"compose service {name} depends on unknown {dep}")
if services["commerce"]["command"] != ["serve"] or services["stubs"]["command"] != ["stubs"]:
    fail("commerce must run serve and stubs must run stubs")
ports = {s: svc.get("ports", []) for s, svc in services.items()}
for service, mapping in (("prometheus", "9091:9090"), ("grafana", "3001:3000"), ("jaeger", "16686:16686"), ("commerce", "8084:8084")):
    if mapping not in ports[service]:
        fail(f"compose {service} should publish {mapping}")

prom = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
if jobs["commerce"]["static_configs"][0]["targets"] != ["commerce:8084"]:
    fail("Prometheus must scrape commerce:8084")
rules = yaml.safe_load(open("deploy/prometheus/alerts.yml"))
alerts = [r["alert"] for g in rules["groups"] for r in g["rules"]]
for r in (r for g in rules["groups"] for r in g["rules"]):
    if not r.get("expr") or r.get("labels", {}).get("severity") not in ("critical", "warning"):
        fail(f"alert {r.get('alert')} needs expr and severity")
for needed in ("CommerceDown", "CommerceSagaFailed", "CommerceProjectionLagHigh", "CommerceRelayLagGrowing"):
    if needed not in alerts:
        fail(f"alert {needed} missing")

for path in ("deploy/grafana/provisioning/datasources/datasources.yml", "deploy/grafana/provisioning/dashboards/dashboards.yml"):
    yaml.safe_load(open(path))
dashboard = json.load(open("deploy/grafana/dashboards/commerce.json"))
exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
for metric in ("grpc_server_requests_total", "grpc_server_request_duration_seconds_bucket", "http_requests_total",
               "http_request_duration_seconds_bucket", "cart_operations_total", "carts_created_total",
               "carts_converted_total", "carts_abandoned_total", "orders_status_transitions_total",
               "saga_steps_total", "saga_step_duration_seconds_bucket", "sagas{", "event_store_append_duration_seconds_bucket",
               "event_store_conflicts_total", "relay_lag_events", "projection_lag_events", "saga_duration_seconds_bucket",
               "saga_retries_total", "db_pool_connections", "redis_pool_connections"):
    if metric not in exprs:
        fail(f"dashboard shows no {metric}")
ids = [p["id"] for p in dashboard["panels"]]
if len(ids) != len(set(ids)):
    fail("dashboard panel ids repeat")
print(f"  compose: {len(services)} services; {len(alerts)} alert rules; dashboard: {len(ids)} panels")
PY

step "deployment checks passed"
