/* SPDX-License-Identifier: MIT */
/* Names for message kinds, from the table in core/msg.h, and the payload
 * helpers. */
#include "core/msg.h"

#include <stdlib.h>
#include <unistd.h>

#include "core/err.h"

static const char *const kind_names[VB_MSG_KIND_COUNT] = {
#define VB__MSG_NAME(name) [VB_MSG_##name] = #name,
    VB_MSG_KIND_MAP(VB__MSG_NAME)
#undef VB__MSG_NAME
};

_Static_assert(sizeof(vb_msg_conn_t) <= VB_MSG_DATA_MAX,
               "conn payload fits a message");
_Static_assert(sizeof(vb_msg_prepare_t) <= VB_MSG_DATA_MAX,
               "prepare payload fits a message");
_Static_assert(sizeof(vb_msg_open_t) <= VB_MSG_DATA_MAX,
               "open payload fits a message");

const char *vb_msg_kind_name(int kind)
{
    if (kind < 0 || kind >= VB_MSG_KIND_COUNT)
        return "?";
    return kind_names[kind];
}

int vb_msg_conn_get(const vb_msg_t *m, vb_msg_conn_t *out)
{
    if (m->kind != VB_MSG_CONN || m->len != sizeof(*out))
        return VB_EINVAL;
    memcpy(out, m->data, sizeof(*out));
    return 0;
}

int vb_msg_prepare_get(const vb_msg_t *m, vb_msg_prepare_t *out)
{
    if (m->kind != VB_MSG_PREPARE || m->len != sizeof(*out))
        return VB_EINVAL;
    memcpy(out, m->data, sizeof(*out));
    return 0;
}

int vb_msg_close_get(const vb_msg_t *m, vb_msg_close_t *out)
{
    if (m->kind != VB_MSG_CALL_CLOSE)
        return VB_EINVAL;
    memset(out, 0, sizeof(*out));
    if (m->len >= sizeof(*out)) {
        memcpy(out, m->data, sizeof(*out));
    } else {
        size_t n =
            m->len < sizeof(out->reason) - 1 ? m->len : sizeof(out->reason) - 1;
        memcpy(out->reason, m->data, n);
        out->first_audio_ms = out->response_p50_ms = out->response_p95_ms =
            VB_MSG_CLOSE_NONE;
    }
    out->reason[sizeof(out->reason) - 1] = '\0';
    return 0;
}

void vb_msg_conn_release(vb_msg_conn_t *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->extra);
    c->fd = -1;
    c->extra = NULL;
    c->extra_len = 0;
}
