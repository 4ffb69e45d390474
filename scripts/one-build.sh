#!/usr/bin/env bash
# Fails when a dev-dependency turns on a feature of a crate the pipeline itself
# builds: then `cargo test` rebuilds that crate (and all that depend on it) with
# other features than `cargo build`, and the tests run another binary than the
# one users get. Cargo.toml turns such features on for every build instead.
set -euo pipefail
features="${1:-ballista}"
tree() { cargo tree --features "$features" --prefix none -e "$1" 2>/dev/null | sed 's/ (\*)//' | sort -u; }
normal=$(mktemp) all=$(mktemp)
trap 'rm -f "$normal" "$all"' EXIT
tree normal,features >"$normal"
tree normal,dev,features >"$all"
missing=$(comm -13 "$normal" "$all" | grep ' feature ' | while read -r crate rest; do
  if grep -q "^$crate v" "$normal"; then echo "  $crate $rest"; fi
done)
if [ -n "$missing" ]; then
  echo "one-build: dev-dependencies turn on features the normal build lacks; add them to Cargo.toml's [dependencies]:"
  echo "$missing"
  exit 1
fi
