# SPDX-License-Identifier: MIT
# Prints the bench table from rows (one JSON object per line, as written
# by `vb-sim load` plus the server's figures). With -v dat=1: a gnuplot
# data file instead (calls in_p50 in_p99 out_p50 out_p99 cpu_ms_per_call_s
# srv_in_p99 srv_out_p99 wakeups_per_frame syscalls_per_frame; -1 for n/a).
function num(row, key,   re, m) {
    re = "\"" key "\":-?[0-9.]+"
    if (match(row, re)) {
        m = substr(row, RSTART, RLENGTH)
        sub(/.*:/, "", m)
        return m + 0
    }
    return -1
}
function flag(row, key) { return index(row, "\"" key "\":true") > 0 }
# A figure that may be missing (null: no perf on the machine) as "n/a".
function opt(row, key, w, fmt,   v) {
    v = num(row, key)
    return v < 0 ? sprintf("%" w "s", "n/a") : sprintf(fmt, v)
}
BEGIN {
    if (!dat) {
        printf "%6s | %-23s | %-23s | %-15s | %8s | %-24s | %-15s | %-15s | %5s | %6s %4s\n",
            "calls", "caller->Gemini ms", "Gemini->caller ms", "barge-in ms",
            "CPU ms", "RSS MB   idle MB  KB/call", "wake-ups", "syscalls",
            "rig %", "lost", "err"
        printf "%6s | %7s %7s %7s | %7s %7s %7s | %7s %7s | %8s | %7s %7s %8s | %7s %7s | %7s %7s | %5s | %6s %4s\n",
            "", "p50", "p99", "p999", "p50", "p99", "p999", "p99", "srv p99",
            "/call-s", "", "", "", "/frame", "/call-s", "/frame", "/call-s",
            "", "", ""
    } else {
        print "# calls in_p50 in_p99 out_p50 out_p99 cpu_ms_per_call_s srv_in_p99 srv_out_p99 wakeups_per_frame syscalls_per_frame"
    }
}
{
    if (dat) {
        printf "%d %.3f %.3f %.3f %.3f %.3f %.3f %.3f %.3f %.3f\n", num($0, "calls"),
            num($0, "in_p50_ms"), num($0, "in_p99_ms"), num($0, "out_p50_ms"),
            num($0, "out_p99_ms"), num($0, "server_cpu_ms_per_call_s"),
            num($0, "srv_in_p99_ms"), num($0, "srv_out_p99_ms"),
            num($0, "wakeups_per_frame"), num($0, "syscalls_per_frame")
        next
    }
    printf "%6d | %7.3f %7.3f %7.3f | %7.3f %7.3f %7.3f | %7.3f %7.3f | %8.3f | %7.1f %7.1f %8.1f | %7.3f %7.1f | %7s %7s | %4.0f%s | %6d %4d\n",
        num($0, "calls"), num($0, "in_p50_ms"), num($0, "in_p99_ms"),
        num($0, "in_p999_ms"), num($0, "out_p50_ms"), num($0, "out_p99_ms"),
        num($0, "out_p999_ms"), num($0, "barge_in_p99_ms"),
        num($0, "srv_barge_in_p99_ms"), num($0, "server_cpu_ms_per_call_s"),
        num($0, "server_rss_kb") / 1024, num($0, "server_rss_idle_kb") / 1024,
        num($0, "rss_kb_per_call"), num($0, "wakeups_per_frame"),
        num($0, "ctxsw_per_call_s"), opt($0, "syscalls_per_frame", 7, "%7.3f"),
        opt($0, "syscalls_per_call_s", 7, "%7.1f"), num($0, "rig_cpu_pct"), flag($0, "rig_bound") ? "!" : " ",
        num($0, "frames_lost"), num($0, "protocol_errors")
}
