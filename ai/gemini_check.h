/* SPDX-License-Identifier: MIT */
/*
 * The Gemini check session: one short Live session against the configured
 * endpoint, with the key, model and voice calls use (connect, TLS,
 * WebSocket upgrade, setup, wait for setupComplete or the rejection,
 * close 1000). The server runs it at start and, while Gemini is known to
 * reject sessions, again with backoff until one succeeds (core/main.c);
 * `voxbridge --check` runs it once and exits with its outcome.
 *
 * DESIGN. Blocking, on the caller's thread, with a private libuv loop and
 * a deadline; nothing is shared with the gemini stages. The outcome is
 * classified the way readiness needs it, by vb_gemini_close_classify()
 * (ai/gemini_proto.h), the calls' classifier too: REJECTED means the
 * service said no to this configuration (HTTP 401/403 or another 4xx on
 * the upgrade, close 1007, close 1008 for a model not found or another
 * policy refusal: retrying the same setup gives the same answer; an
 * untrusted TLS certificate), UNREACHABLE means the service could not be
 * asked (DNS, refused, TLS, timeout, 5xx, 1011, a transient 1008): not
 * the configuration's fault, so it does not make the instance unready.
 */
#ifndef VB_AI_GEMINI_CHECK_H
#define VB_AI_GEMINI_CHECK_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ai/gemini.h"

typedef enum vb_gemini_check_result {
    VB_GEMINI_CHECK_OK = 0,
    VB_GEMINI_CHECK_REJECTED = 1,    /* auth or configuration */
    VB_GEMINI_CHECK_UNREACHABLE = 2, /* network, TLS, timeout, server */
} vb_gemini_check_result_t;

/* "ok", "rejected", "unreachable". Static. */
const char *vb_gemini_check_name(vb_gemini_check_result_t r);

/* Runs one check session with `o` (from vb_gemini_options_from_config;
 * url, api_key, ca_file, setup, system_prompt_file are used) within
 * `timeout_ms` (0: 10000). Writes the exact reason, one line, to `why`
 * ("setupComplete in 84 ms", "HTTP 401 on the upgrade: check
 * GEMINI_API_KEY", "close 1008: models/x is not found ..."). `cancel`
 * (may be NULL), set by another thread, ends the session within about
 * VB_GEMINI_CHECK_POLL_MS as UNREACHABLE "cancelled", so a server that
 * stops need not wait out the deadline. Any thread; blocks up to the
 * timeout. */
#define VB_GEMINI_CHECK_POLL_MS 50
vb_gemini_check_result_t vb_gemini_check_run(const vb_gemini_options_t *o,
                                             uint32_t timeout_ms,
                                             const atomic_bool *cancel,
                                             char *why, size_t whysz);

#endif
