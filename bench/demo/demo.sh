#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# `make demo`: one whole call on this machine, no credentials needed.
# Starts the fake Gemini Live server in echo mode and voxbridge pointed at
# it, places one call with the Twilio simulator speaking a sentence made with
# espeak-ng, saves what the caller heard to demo-out/heard.wav, and prints
# the transcript and the per-stage latency table from /metrics.
set -euo pipefail

build=${1:-build}
out=${DEMO_OUT:-demo-out}
sentence=${DEMO_SENTENCE:-"Hello, this is a test call through the voice bridge. Can you hear me clearly?"}
mkdir -p "$out"
rm -rf "$out/transcripts" && mkdir -p "$out/transcripts"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

. "$(dirname "$0")/../scripts/lib.sh"

echo "== speech: \"$sentence\""
espeak-ng -w "$out/speech-22k.wav" "$sentence"
sox "$out/speech-22k.wav" -r 8000 -c 1 -b 16 "$out/speech.wav"
rm -f "$out/speech-22k.wav"

echo "== starting vb-fake-gemini (echo mode)"
"$build/vb-fake-gemini" --listen 127.0.0.1:0 --api-key demo-key --mode echo \
    --log "$out/fake-gemini.jsonl" > "$out/fake-gemini.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    grep -q '^listening on' "$out/fake-gemini.out" 2>/dev/null && break
    sleep 0.05
done
gport=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$out/fake-gemini.out" | head -n1)
[ -n "$gport" ] || { echo "demo: vb-fake-gemini did not start:"; cat "$out/fake-gemini.out"; exit 1; }

port=$(free_port)
mport=$(free_port)
echo "== starting voxbridge on 127.0.0.1:$port (metrics on :$mport)"
GEMINI_API_KEY=demo-key "$build/voxbridge" \
    --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport" \
    --public-url "http://127.0.0.1:$port" \
    --gemini-url "ws://127.0.0.1:$gport/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent" \
    --transcript-dir "$out/transcripts" > "$out/voxbridge.log" 2>&1 &
vbpid=$!
pids+=($vbpid)
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
done

echo "== placing a call with vb-sim"
"$build/vb-sim" call --webhook "http://127.0.0.1:$port/webhook/voice" \
    --audio "$out/speech.wav" --heard "$out/heard.wav" --tail 7 \
    | tee "$out/call-summary.txt"

echo
echo "== transcript"
if compgen -G "$out/transcripts/*.jsonl" > /dev/null; then
    cat "$out"/transcripts/*.jsonl
else
    grep 'msg=transcript' "$out/voxbridge.log" || echo "(none)"
fi

echo
echo "== per-stage latency added by voxbridge (from /metrics)"
http_get "$mport" /metrics > "$out/metrics.txt"
awk -f "$(dirname "$0")/../scripts/latency_table.awk" "$out/metrics.txt"

kill -TERM "$vbpid"
wait "$vbpid" && vbrc=0 || vbrc=$?
echo
echo "== done: the caller heard $out/heard.wav (voxbridge exited $vbrc; log in $out/voxbridge.log)"
[ "$vbrc" -eq 0 ]
