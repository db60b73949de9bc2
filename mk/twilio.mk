# SPDX-License-Identifier: MIT
# Twilio side: the stream stage tests, the vb-sim call simulator, the
# Twilio message parser fuzz target.

THREADED_TESTS += test_ws test_twilio_stream
