# Whole calls through build/voxbridge, build/vb-sim and build/vb-fake-gemini
# (tests/test_e2e.c). Threaded end to end, so CI runs it again under
# ThreadSanitizer: that run is the 10-call TSan run of the whole server.
THREADED_TESTS += test_e2e
# Gemini faults (tests/test_e2e_faults.c): replacement of a stalled or
# garbage connection, and the fallback message when the model is gone.
THREADED_TESTS += test_e2e_faults
# Outsiders (tests/test_e2e_abuse.c): unauthenticated streams, a ping flood,
# a reused token, media faster than real time, silence — beside a real call.
THREADED_TESTS += test_e2e_abuse
# Assistants (tests/test_e2e_assist.c): the number picks the assistant,
# SIGHUP swaps the file with a call live, a stream on another instance.
THREADED_TESTS += test_e2e_assist
# Operations (tests/test_e2e_ops.c): three instances behind real nginx
# restarted in turn under continuous calls, sticky streams (one Gemini
# session per call), Gemini readiness and --check, SIGHUP log reopen.
THREADED_TESTS += test_e2e_ops
# HTTP tools and transfer through the real binaries (tests/test_e2e_tools.c):
# a threaded business app in the test, concurrent tool requests.
THREADED_TESTS += test_e2e_tools
# Call recording (tests/test_e2e_record.c): the file against what vb-sim
# sent and heard, a SIGKILL, a recorder slowed on purpose.
THREADED_TESTS += test_e2e_record
# Gemini session lifecycle (tests/test_e2e_gemini14.c): intermittent 1008
# closes resumed, goAway before setupComplete.
THREADED_TESTS += test_e2e_gemini14
# Outbound calls (tests/test_e2e_outbound.c): POST /v1/calls through
# `vb-sim serve` (Calls.json), variables, report, machine detection.
THREADED_TESTS += test_e2e_outbound
# How a Twilio call ends (tests/test_e2e_twilio14.c): <Connect action>
# after end_call or a failure, with and without REST; <Reject> at capacity.
THREADED_TESTS += test_e2e_twilio14
# Media timing of a real leg (tests/test_e2e_timing.c): jitter, a stall
# and its burst, a gap in the timeline.
THREADED_TESTS += test_e2e_timing
# More post-call reports (tests/test_e2e_report2.c): a call that never
# streamed, an HTTP tool in the report, a receiver answering 401.
THREADED_TESTS += test_e2e_report2
