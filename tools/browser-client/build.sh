#!/usr/bin/env bash
# Builds the browser client of the grpc-web test into dist/client.js: npm ci (from the committed
# package-lock.json, only when it changed), TypeScript generated from proto/ by protoc-gen-es
# (npm, a local plugin: nothing remote) through the project's buf (scripts/install-tools.sh,
# run here when buf is missing), bundled with esbuild for the browser (no CDN at test time).
# Prints the bundle's path. Idempotent; about a second once node_modules is there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"
stamp=node_modules/.package-lock.stamp
if ! cmp -s package-lock.json "$stamp" 2>/dev/null; then
  npm ci --silent --no-audit --no-fund >&2
  cp package-lock.json "$stamp"
fi
buf="$(command -v buf || echo "$root/.tools/bin/buf")"
if [ ! -x "$buf" ]; then
  eval "$(WITH_HELM=0 "$root/scripts/install-tools.sh")"
  buf="$root/.tools/bin/buf"
fi
rm -rf gen dist
(cd "$root" && "$buf" generate --template tools/browser-client/buf.gen.yaml)
# Type-checked against the generated code (esbuild only strips types).
node_modules/.bin/tsc --noEmit --strict --skipLibCheck --target es2022 --module esnext \
  --moduleResolution bundler --lib es2022,dom,dom.iterable client.ts >&2
node_modules/.bin/esbuild client.ts --bundle --format=esm --target=es2022 --log-level=warning \
  --outfile=dist/client.js >&2
echo "$here/dist/client.js"
