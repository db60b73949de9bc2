/* SPDX-License-Identifier: MIT */
/* Stage threads; see thread.h. */
#include "core/thread.h"

#include "core/err.h"

int vb_thread_start(vb_thread_t *t, void (*fn)(void *), void *arg)
{
    if (t->started)
        return VB_EBUSY;
    if (uv_thread_create(&t->id, fn, arg) != 0)
        return VB_ESYS;
    t->started = true;
    return 0;
}

void vb_thread_stop(vb_thread_t *t, uv_async_t *stop)
{
    if (!t->started)
        return;
    uv_async_send(stop);
    uv_thread_join(&t->id);
    t->started = false;
}
