#!/usr/bin/env bash
# Renders the Graphviz sources under docs/pictures/ (*.dot) into SVG and PNG beside them.
# Needs Graphviz's `dot` (Debian: apt-get install graphviz). The rendered files are committed, so
# readers and the docs need no Graphviz; tests/unit/foundation/test_pictures.py fails when a
# source changed and its pictures were not rendered again.
set -euo pipefail
cd "$(dirname "$0")/../docs/pictures"
command -v dot >/dev/null || { echo "dot not found: apt-get install graphviz" >&2; exit 1; }
for src in *.dot; do
  base=${src%.dot}
  dot -Tsvg "$src" -o "$base.svg"
  dot -Tpng -Gdpi=110 "$src" -o "$base.png"
  echo "rendered $base.svg $base.png"
done
# The stamp ties each picture to its source (checked by the test without needing Graphviz).
sha256sum *.dot > sources.sha256
