#!/usr/bin/env bash
# Rebuild the page's vendored chart library (serve/static/vendor/) from npm, at the exact versions of
# serve/static/vendor/package-lock.json: Observable Plot's UMD build, the D3 build it was made against,
# and both licences. The files are committed: the page works offline and loads nothing from another host.
#   scripts/vendor_js.sh            (needs node + npm and the npm registry; run after editing package.json)
set -euo pipefail
cd "$(dirname "$0")/.."
vendor=serve/static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$vendor/package.json" "$vendor/package-lock.json" "$work/"
(cd "$work" && npm ci --no-audit --no-fund --ignore-scripts --silent)
modules="$work/node_modules"
cp "$modules/d3/dist/d3.min.js" "$vendor/d3.min.js"
cp "$modules/d3/LICENSE" "$vendor/LICENSE.d3"
cp "$modules/@observablehq/plot/dist/plot.umd.min.js" "$vendor/plot.umd.min.js"
cp "$modules/@observablehq/plot/LICENSE" "$vendor/LICENSE.plot"
# The lock's resolved versions, so a reader of the folder sees what it holds without node.
node -e 'const l = require(process.argv[1]).packages;
  for (const p of ["node_modules/d3", "node_modules/@observablehq/plot"]) console.log(p.slice(13) + "@" + l[p].version)' \
  "$work/package-lock.json" > "$vendor/VERSIONS"
cat "$vendor/VERSIONS"
