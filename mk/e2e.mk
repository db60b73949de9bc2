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
# Call recording (tests/test_e2e_record.c): the file against what vb-sim
# sent and heard, a SIGKILL, a recorder slowed on purpose.
THREADED_TESTS += test_e2e_record
