#!/usr/bin/env bash
# Runs `flotilla-bench soak` with the hub under heaptrack, then prints the hub's live heap
# (bytes allocated and not yet freed) every 30 s. RSS counts what the allocator holds;
# this counts what the hub holds, so the two together tell a leak from fragmentation.
#
#   bench/scripts/soak-heap-profile.sh --duration 4m --restart-every 200ms --warm-up 1m
#
# Arguments go to `flotilla-bench soak`. Needs heaptrack (Debian: apt-get install heaptrack)
# and release builds: cargo build --release -p flotilla-hub -p flotilla-bench.
# The soak's own RSS table is meaningless here: it measures heaptrack's wrapper process.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${BIN_DIR:-$root/target/release}
out=$(mktemp -d -t flotilla-heap-XXXXXX)
for tool in heaptrack heaptrack_print; do
    command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install heaptrack" >&2; exit 1; }
done

# The soak finds `flotilla-hub` in --bin-dir: put a wrapper there that profiles `run`.
mkdir -p "$out/bin"
cat >"$out/bin/flotilla-hub" <<EOF
#!/usr/bin/env bash
if [ "\$1" = run ]; then exec heaptrack -o "$out/hub" "$bin/flotilla-hub" "\$@"; fi
exec "$bin/flotilla-hub" "\$@"
EOF
chmod +x "$out/bin/flotilla-hub"

"$bin/flotilla-bench" soak --bin-dir "$out/bin" "$@" | grep -E '^(Soak|commits)' || true

# The bench killed the wrapper; stop the profiled hub itself so heaptrack finishes its file.
pkill -TERM -f "^$bin/flotilla-hub run --data-dir .*flotilla-bench-soak" || true
for _ in $(seq 60); do
    pgrep -f "^$bin/flotilla-hub run --data-dir .*flotilla-bench-soak" >/dev/null || break
    sleep 1
done
sleep 2
profile=$(ls "$out"/hub*.zst 2>/dev/null | head -1)
[ -n "$profile" ] || { echo "heaptrack wrote no profile in $out" >&2; exit 1; }
heaptrack_print -f "$profile" -M "$out/massif" >/dev/null

echo
echo "| t | hub live heap |"
echo "|---|---|"
grep -E '^(time|mem_heap_B)=' "$out/massif" | paste - - | tr '=\t' '  ' |
    awk '{ if (NR == 1 || $2 - last >= 30) { printf "| %.0f s | %.2f MiB |\n", $2, $4 / 1048576; last = $2 } }'
echo
echo "profile: $profile (open with heaptrack_gui or heaptrack_print)"
