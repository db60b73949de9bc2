#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The load bench: for each resampler and each concurrency level, a fresh
# vb-fake-gemini (echo mode, --timing) and a fresh voxbridge, then
# `vb-sim load` with that many calls; the server's own /metrics histograms
# are read after each level and reported beside the rig's measurements.
#
#   bench/scripts/bench.sh BUILD full    # make bench: the ramp, both resamplers
#   bench/scripts/bench.sh BUILD quick   # make bench-quick: proves the harness
#
# voxbridge reaches the fake over TLS (wss://, as a deployment reaches
# Gemini), trusting a test CA made here with openssl; BENCH_TRANSPORT=ws
# selects plain WebSocket. Environment: BENCH_LEVELS (the calls per level,
# e.g. "1 10 250"), BENCH_BEYOND (full mode: levels run after the list only
# while the previous level passed and the rig kept up; default "750 1000"),
# BENCH_RESAMPLERS, BENCH_STEADY_S, BENCH_PERF=0 (no perf stat),
# BENCH_KEEP=1 (keep the per-level files), BENCH_RESULTS (output dir).
#
# Writes bench/results/<date>-<sha>[-<resampler>].json (+ latest*.json),
# a PNG plot (full only) and prints a table. Fails when a level loses
# frames, sees protocol errors or a failed call (in full mode: unless the
# rig itself was saturated; that row is flagged), or a row lacks a field.
set -euo pipefail

build=${1:-build}
mode=${2:-quick}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
results=${BENCH_RESULTS:-$root/bench/results}
work=$(mktemp -d /tmp/vb-bench.XXXXXX)
mkdir -p "$results"

case $mode in
full)
    levels=${BENCH_LEVELS:-"1 10 100 250 500"}
    if [ -n "${BENCH_LEVELS:-}" ]; then
        beyond=${BENCH_BEYOND:-}
    else
        beyond=${BENCH_BEYOND-"750 1000"}
    fi
    resamplers=${BENCH_RESAMPLERS:-"speexdsp libsamplerate"}
    steady=${BENCH_STEADY_S:-32}
    ;;
quick)
    levels=${BENCH_LEVELS:-"1 10"}
    beyond=""
    resamplers=${BENCH_RESAMPLERS:-"speexdsp"}
    steady=${BENCH_STEADY_S:-6}
    ;;
*)
    echo "usage: $0 BUILD full|quick" >&2
    exit 2
    ;;
esac

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap 'cleanup; [ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"' EXIT

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

. "$here/lib.sh"

for n in $levels $beyond; do
    case $n in
    '' | *[!0-9]* | 0)
        echo "bench: bad level \"$n\" in BENCH_LEVELS/BENCH_BEYOND (calls, 1..9999)" >&2
        exit 2
        ;;
    esac
done

# The Gemini leg: wss:// to the fake with a test CA (default) or ws://.
transport=${BENCH_TRANSPORT:-tls}
gemini_path=/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent
fake_tls=()
vb_tls=()
case $transport in
tls)
    command -v openssl > /dev/null || {
        echo "bench: openssl is needed for BENCH_TRANSPORT=tls (or set BENCH_TRANSPORT=ws)" >&2
        exit 2
    }
    (
        cd "$work"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout ca.key -out ca.crt -days 2 -subj /CN=vb-bench-ca
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout fake.key -out fake.csr -subj /CN=localhost
        printf 'subjectAltName=DNS:localhost\n' > fake.ext
        openssl x509 -req -in fake.csr -CA ca.crt -CAkey ca.key \
            -CAcreateserial -days 2 -extfile fake.ext -out fake.crt
    ) > "$work/openssl.log" 2>&1 || {
        echo "bench: cannot make the test CA:" >&2
        cat "$work/openssl.log" >&2
        exit 1
    }
    fake_tls=(--cert "$work/fake.crt" --key "$work/fake.key")
    vb_tls=(--gemini-ca-file "$work/ca.crt")
    gemini_scheme=wss
    ;;
ws)
    gemini_scheme=ws
    ;;
*)
    echo "bench: BENCH_TRANSPORT must be tls or ws, not \"$transport\"" >&2
    exit 2
    ;;
esac
perf_args() { # dir
    [ "${BENCH_PERF:-1}" = 0 ] || printf '%s\n' --perf-stat "$1/perf.txt"
}

# One level: prints the row (one JSON line) on stdout.
run_level() { # resampler calls
    local rs=$1 n=$2 ramp
    ramp=$(awk -v n="$n" 'BEGIN { r = n / 100; if (r < 1) r = 1; print r }')
    local d="$work/$rs-$n"
    mkdir -p "$d"
    "$build/vb-fake-gemini" --listen 127.0.0.1:0 --api-key bench-key \
        --mode echo --timing "$d/fake.timing" "${fake_tls[@]}" \
        > "$d/fake.out" 2>&1 &
    local fpid=$!
    pids+=("$fpid")
    wait_for "$d/fake.out" '^listening on' 10
    local gport port mport vpid try maxc=600
    # Idle memory is set by --max-calls: 600 unless the level needs more.
    [ "$n" -le "$maxc" ] || maxc=$n
    gport=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$d/fake.out" | head -n1)
    # A free port can be taken by someone else before voxbridge binds it:
    # pick new ones and start again when it says so.
    for try in 1 2 3; do
        port=$(free_port)
        mport=$(free_port)
        GEMINI_API_KEY=bench-key TWILIO_AUTH_TOKEN=bench-token \
            "$build/voxbridge" --listen "127.0.0.1:$port" \
            --metrics-listen "127.0.0.1:$mport" \
            --public-url "http://127.0.0.1:$port" --lanes 2 \
            --max-calls "$maxc" --resampler "$rs" $VB_EXTRA \
            --gemini-url "$gemini_scheme://localhost:$gport$gemini_path" \
            "${vb_tls[@]}" > "$d/voxbridge.log" 2>&1 &
        vpid=$!
        local waited=0
        while [ "$waited" -lt 400 ] && kill -0 "$vpid" 2>/dev/null &&
              ! grep -q 'msg="voxbridge ready"' "$d/voxbridge.log"; do
            sleep 0.05
            waited=$((waited + 1))
        done
        grep -q 'msg="cannot listen"' "$d/voxbridge.log" || break
        wait "$vpid" 2>/dev/null || true
        echo "bench: port taken, starting voxbridge again" >&2
    done
    pids+=("$vpid")
    wait_for "$d/voxbridge.log" 'msg="voxbridge ready"' 20
    sleep 1
    local rc=0
    "$build/vb-sim" load --webhook "http://127.0.0.1:$port/webhook/voice" \
        --auth-token bench-token --calls "$n" --duration "$steady" \
        --ramp "$ramp" --fake-timing "$d/fake.timing" --server-pid "$vpid" \
        --fake-pid "$fpid" --label "$rs" $(perf_args "$d") \
        > "$d/row.json" 2> "$d/sim.err" || rc=$?
    http_get "$mport" /metrics > "$d/metrics.txt" || true
    kill -TERM "$vpid" "$fpid" 2>/dev/null || true
    wait "$vpid" 2>/dev/null || true
    wait "$fpid" 2>/dev/null || true
    pids=()
    # The server's own view: caller -> Gemini at gemini_in, Gemini ->
    # caller at twilio_out, barge-in.
    local srv
    srv=$(awk -v kv=1 -f "$here/latency_table.awk" "$d/metrics.txt" | awk '
        /stage="gemini_in"/  { printf ",\"srv_in_p50_ms\":%s,\"srv_in_p99_ms\":%s", $2, $3 }
        /stage="twilio_out"/ { printf ",\"srv_out_p50_ms\":%s,\"srv_out_p99_ms\":%s", $2, $3 }
        /^vb_barge_in_seconds/ { printf ",\"srv_barge_in_p99_ms\":%s", $3 }')
    local drops
    drops=$(awk '/^vb_(gemini_dropped_total|twilio_inbound_dropped_bytes_total|twilio_audio_dropped_bytes_total)/ { s += $2 } END { print s + 0 }' "$d/metrics.txt")
    if [ ! -s "$d/row.json" ]; then
        echo "bench: no row for $rs/$n calls:" >&2
        cat "$d/sim.err" >&2
        return 1
    fi
    sed "s/}\$/$srv,\"server_drops\":$drops,\"transport\":\"$transport\",\"max_calls\":$maxc}/" "$d/row.json"
    if [ "$rc" -ne 0 ]; then
        echo "bench: $rs/$n calls failed (vb-sim exit $rc):" >&2
        head -20 "$d/sim.err" >&2
        tail -5 "$d/voxbridge.log" >&2
        return 1
    fi
}

fields="calls in_p50_ms in_p99_ms in_p999_ms out_p50_ms out_p99_ms out_p999_ms
barge_in_p99_ms server_cpu_ms_per_call_s server_rss_kb rss_kb_per_call
rig_cpu_pct frames_lost protocol_errors server_rss_idle_kb window_frames_in
window_frames_out server_ctxsw wakeups_per_frame ctxsw_per_call_s
server_syscalls syscalls_per_frame syscalls_per_call_s"

sha=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
date=$(date -u +%Y-%m-%d)
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1)
machine=$(printf '{"cpu":"%s","cores":%s,"mem_kb":%s,"kernel":"%s"}' \
    "${cpu:-unknown}" "$(nproc)" \
    "$(awk '/MemTotal/ { print $2 }' /proc/meminfo)" "$(uname -r)")
status=0
first=1
for rs in $resamplers; do
    rows="$work/rows-$rs"
    : > "$rows"
    # The levels past the list run only while the previous one passed
    # with the rig keeping up: beyond that the machine is measured.
    kept_up=1
    for n in $levels ${beyond:+-} $beyond; do
        if [ "$n" = - ]; then
            beyond_on=1
            continue
        fi
        if [ -n "${beyond_on:-}" ] && [ "$kept_up" = 0 ]; then
            echo "bench: $rs: skipping $n calls (the previous level did not keep up)" >&2
            continue
        fi
        echo "bench: $rs, $n calls (steady ${steady}s, $transport) ..." >&2
        kept_up=1
        if ! run_level "$rs" "$n" >> "$rows"; then
            kept_up=0
            # A full ramp goes past what two cores can carry: a level where
            # the rig itself is saturated is reported (flagged in the
            # table), not failed. Anything else fails the run.
            if [ "$mode" = full ] && tail -n1 "$rows" | grep -q '"rig_bound":true'; then
                echo "bench: $rs/$n calls: failures while the rig is saturated (reported, flagged)" >&2
            else
                status=1
            fi
        fi
        tail -n1 "$rows" | grep -q '"rig_bound":false' || kept_up=0
    done
    beyond_on=
    # Every row has every field.
    while read -r row; do
        for f in $fields; do
            case $row in
            *"\"$f\":"*) ;;
            *) echo "bench: row lacks $f: $row" >&2; status=1 ;;
            esac
        done
    done < "$rows"
    suffix=""
    [ "$first" = 1 ] || suffix="-$rs"
    out="$results/$date-$sha$suffix.json"
    [ "$mode" = quick ] && out="$work/quick-$rs.json"
    {
        printf '{"machine":%s,"git_sha":"%s","date":"%s","mode":"%s","resampler":"%s","transport":"%s","rows":[\n' \
            "$machine" "$sha" "$date" "$mode" "$rs" "$transport"
        sed '$!s/$/,/' "$rows"
        printf ']}\n'
    } > "$out"
    if [ "$mode" = full ]; then
        cp "$out" "$results/latest$suffix.json"
    fi
    echo
    echo "== $rs ($mode, $transport to the fake, ${steady} s steady per level): $out"
    awk -f "$here/bench_table.awk" "$rows"
    first=0
done

if [ "$mode" = full ] && command -v gnuplot > /dev/null; then
    for rs in $resamplers; do
        awk -f "$here/bench_table.awk" -v dat=1 "$work/rows-$rs" > "$work/$rs.dat"
    done
    gnuplot -e "dir='$work'; out='$results/latest.png'" "$here/bench.gp"
    cp "$results/latest.png" "$results/$date-$sha.png"
    echo "plot: $results/latest.png"
fi
exit "$status"
