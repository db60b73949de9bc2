#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# `make demo-assistant`: one call where the model looks an order up and
# hangs up, then the signed post-call report the business receives. No
# credentials: vb-fake-gemini plays the model from a script (a caller
# transcription, a lookup_order tool call, the answer, end_call),
# vb-example-app plays the business (the lookup_order tool and the
# call.ended receiver), vb-sim plays Twilio and the caller.
set -euo pipefail

build=${1:-build}
out=${DEMO_OUT:-demo-out/assistant}
secret=demo-webhook-secret
rm -rf "$out" && mkdir -p "$out"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

. "$(dirname "$0")/../scripts/lib.sh"

cat > "$out/script.jsonl" <<'JSONL'
{"at_ms":300,"type":"inputTranscription","text":"Hi, where is my order A1001?"}
{"at_ms":600,"type":"toolCall","name":"lookup_order","id":"fc-1","args":{"order_id":"A1001"}}
{"at_ms":1200,"type":"audio","ms":1500,"hz":500}
{"at_ms":1250,"type":"outputTranscription","text":"Your order A1001 has shipped and should arrive on December 5th. Goodbye!"}
{"at_ms":1300,"type":"toolCall","name":"end_call","id":"fc-2"}
{"at_ms":2000,"type":"turnComplete"}
JSONL

aport=$(free_port)
echo "== starting vb-example-app on 127.0.0.1:$aport"
"$build/vb-example-app" --listen "127.0.0.1:$aport" --secret "$secret" \
    --store "$out/received" > "$out/app.out" 2>&1 &
pids+=($!)
wait_for "$out/app.out" '^listening on' 10

echo "== starting vb-fake-gemini (scripted: lookup_order, then end_call)"
"$build/vb-fake-gemini" --listen 127.0.0.1:0 --api-key demo-key --mode script \
    --script "$out/script.jsonl" --log "$out/fake-gemini.jsonl" \
    > "$out/fake-gemini.out" 2>&1 &
pids+=($!)
wait_for "$out/fake-gemini.out" '^listening on' 10
gport=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$out/fake-gemini.out" | head -n1)

# The assistants file declares the tool to the model; its calls go to the
# app's lookup_order URL, signed.
cat > "$out/assistants.json" <<JSON
{"default": "front-desk",
 "assistants": {"front-desk": {
   "instructions": "You are the front desk of an online shop. Keep answers short.",
   "tools": [{"name": "lookup_order", "description": "Find an order by its id",
              "parameters": {"type": "object",
                             "properties": {"order_id": {"type": "string"}},
                             "required": ["order_id"]},
              "url": "http://127.0.0.1:$aport/tools/lookup_order",
              "timeout_ms": 4000}]}}}
JSON

port=$(free_port)
echo "== starting voxbridge on 127.0.0.1:$port (reports to the app)"
GEMINI_API_KEY=demo-key VOXBRIDGE_WEBHOOK_SECRET=$secret "$build/voxbridge" \
    --listen "127.0.0.1:$port" --public-url "http://127.0.0.1:$port" \
    --gemini-url "ws://127.0.0.1:$gport/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent" \
    --events-url "http://127.0.0.1:$aport/events" --events-spool "$out/spool" \
    --assistants "$out/assistants.json" > "$out/voxbridge.log" 2>&1 &
vbpid=$!
pids+=($vbpid)
wait_for "$out/voxbridge.log" 'msg="voxbridge ready"' 10

echo "== placing a call with vb-sim"
sox -n -r 8000 -c 1 -b 16 "$out/caller.wav" trim 0 8
"$build/vb-sim" call --webhook "http://127.0.0.1:$port/webhook/voice" \
    --audio "$out/caller.wav" --timeout 30 | tee "$out/call-summary.txt"

echo
echo "== the tool call, as the model saw it answered"
grep '"toolResponse"' "$out/fake-gemini.jsonl" | head -n 2 || echo "(none)"

echo
echo "== what the business app received"
wait_for "$out/app.out" 'event=call.ended' 15
grep '^request' "$out/app.out"
if ! grep -q 'event=tool.call' "$out/app.out"; then
    echo "the tool call did not reach the app" >&2
    exit 1
fi

echo
echo "== the post-call report (GET /reports on the app)"
http_get "$aport" '/reports?pretty'

kill -TERM "$vbpid"
wait "$vbpid" && vbrc=0 || vbrc=$?
echo
echo "== done (voxbridge exited $vbrc; logs and the raw signed report in $out)"
[ "$vbrc" -eq 0 ]
