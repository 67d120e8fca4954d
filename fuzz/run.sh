#!/usr/bin/env bash
# Run every fuzz target for a bounded time (default 60 s each):
#   fuzz/run.sh [seconds] [target...]
# Needs a nightly toolchain (`rustup toolchain install nightly`) and
# cargo-fuzz (installed here if missing). A crash leaves its input under
# fuzz/artifacts/<target>/; turn it into a regression test next to the
# code it broke, then fix the code. CI checks that the targets compile;
# when the main crates gain dependencies, refresh this workspace's lock
# from the main one (`cp Cargo.lock fuzz/Cargo.lock`, then build here) so
# both resolve to the same versions.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(manifest routes runtime_config allowed_hosts request_headers)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds}s"
  cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -max_len=4096
done
