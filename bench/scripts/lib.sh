# SPDX-License-Identifier: MIT
# Shell helpers shared by bench/demo/demo.sh and bench/scripts/bench.sh
# (sourced; bash).

# A loopback port nobody listens on (bash's /dev/tcp connect fails on a
# free port).
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

# GET a path over HTTP/1.0 with bash's /dev/tcp (no curl needed); prints
# the body.
http_get() {
    local port=$1 path=$2
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
    sed '1,/^\r$/d' <&3
    exec 3<&-
}

# Waits until FILE contains PATTERN (grep -E), at most SECONDS; on timeout
# prints FILE to stderr and fails.
wait_for() {
    local file=$1 pattern=$2 seconds=$3 i
    for i in $(seq 1 $((seconds * 20))); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "no \"$pattern\" in $file:" >&2
    cat "$file" >&2
    return 1
}
