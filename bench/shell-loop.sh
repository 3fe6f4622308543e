#!/usr/bin/env bash
# The loop an operator would write by hand to move a MongooseIM-layout cluster to TLS
# distribution one node at a time. Kept as the baseline for bench/run (never run by CI).
#
#   ERL_EPMD_PORT=<port> bench/shell-loop.sh <cluster dir> <sname>...
#
# For each node in order: stop it with its own ctl, uncomment the TLS block of etc/vm.dist.args
# with sed, start it, then poll the node's own `ctl peers` until every node migrated before it
# shows up as a tls peer (the first node: until its ctl answers). Gives up after 120 s a node.
set -euo pipefail
dir=$1
shift
migrated=()
for sname in "$@"; do
    root="$dir/$sname"
    "$root/bin/ctl" stop
    sed -i '/^#-proto_dist/,/^$/ s/^#\([^#]\)/\1/' "$root/etc/vm.dist.args"
    "$root/bin/ctl" start
    deadline=$((SECONDS + 120))
    until peers=$("$root/bin/ctl" peers 2>/dev/null) && {
        ok=1
        for m in "${migrated[@]}"; do
            grep -qx "$m@localhost tls" <<<"$peers" || { ok=0; break; }
        done
        [ "$ok" = 1 ]
    }; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "shell-loop: $sname did not rejoin its migrated peers over TLS" >&2
            exit 1
        fi
        sleep 0.2
    done
    migrated+=("$sname")
    echo "$sname: tls"
done
