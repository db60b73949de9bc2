/* SPDX-License-Identifier: MIT */
/*
 * A stage thread: one OS thread running its stage's libuv loop until the
 * stage's stop async fires. Every stage (twilio-io, dsp, gemini) starts,
 * stops and joins its thread the same way; this is that way, once.
 */
#ifndef VB_CORE_THREAD_H
#define VB_CORE_THREAD_H

#include <stdbool.h>
#include <uv.h>

typedef struct vb_thread {
    uv_thread_t id;
    bool started;
} vb_thread_t;

/* Starts `fn(arg)` on a new thread. Returns 0, VB_EBUSY when already
 * started, VB_ESYS when the thread cannot be created. Owner thread only. */
int vb_thread_start(vb_thread_t *t, void (*fn)(void *), void *arg);

/* When started: wakes the thread through `stop` (its loop's stop async,
 * whose callback ends the loop) and joins it. Otherwise nothing. Owner
 * thread only. */
void vb_thread_stop(vb_thread_t *t, uv_async_t *stop);

#endif
