/* SPDX-License-Identifier: MIT */
/* Names for message kinds, from the table in core/msg.h. */
#include "core/msg.h"

static const char *const kind_names[VB_MSG_KIND_COUNT] = {
#define VB__MSG_NAME(name) [VB_MSG_##name] = #name,
    VB_MSG_KIND_MAP(VB__MSG_NAME)
#undef VB__MSG_NAME
};

const char *vb_msg_kind_name(int kind)
{
    if (kind < 0 || kind >= VB_MSG_KIND_COUNT)
        return "?";
    return kind_names[kind];
}
