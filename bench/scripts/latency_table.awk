# SPDX-License-Identifier: MIT
# Prints p50/p99 per series of vb_stage_latency_seconds, vb_ring_wait_seconds
# and vb_barge_in_seconds from Prometheus text on stdin, interpolating
# linearly inside the bucket that holds each quantile (as histogram_quantile
# does). Usage: curl -s host/metrics | awk -f latency_table.awk
# With -v kv=1: "series p50_ms p99_ms count" lines, no header (for scripts).
function flush_series(   i, q, qs, rank, lo, hi, clo, chi, v, out) {
    if (cur == "" || n == 0) return
    total = cnt[n]
    if (total == 0) {
        if (kv) printf "%s -1 -1 0\n", cur
        else printf "  %-44s %10s %10s %8d\n", cur, "-", "-", 0
        return
    }
    split("0.5 0.99", qs, " ")
    out = ""
    for (q = 1; q <= 2; q++) {
        rank = qs[q] * total
        lo = 0; clo = 0
        for (i = 1; i <= n; i++) {
            if (cnt[i] >= rank) {
                hi = le[i]; chi = cnt[i]
                if (hi == "+Inf") { v = lo } else if (chi == clo) { v = hi }
                else { v = lo + (hi - lo) * (rank - clo) / (chi - clo) }
                break
            }
            lo = le[i]; clo = cnt[i]
        }
        out = out sprintf(" %10.3f", v * 1000)
    }
    if (kv) { gsub(/ +/, " ", out); printf "%s%s %d\n", cur, out, total }
    else printf "  %-44s%s %8d\n", cur, out, total
}
BEGIN { cur = ""; n = 0
        if (!kv) printf "  %-44s %10s %10s %8s\n", "series", "p50 ms", "p99 ms", "count" }
/^vb_(stage_latency|ring_wait|barge_in)_seconds_bucket/ {
    name = $1
    sub(/_bucket/, "", name)
    lab = name; sub(/,?le="[^"]*"/, "", lab); sub(/\{\}/, "", lab)
    l = $1; sub(/.*le="/, "", l); sub(/".*/, "", l)
    if (lab != cur) { flush_series(); cur = lab; n = 0 }
    n++; le[n] = l; cnt[n] = $2 + 0
}
END { flush_series() }
