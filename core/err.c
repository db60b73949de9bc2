/* SPDX-License-Identifier: MIT */
/* Text for the VB_E* codes of core/err.h, generated from the same table. */
#include "core/err.h"

static const char *const messages[VB__ERR_COUNT] = {
#define VB__ERR_MSG(name, msg) [VB__IDX_##name] = msg,
    VB_ERR_MAP(VB__ERR_MSG)
#undef VB__ERR_MSG
};

static const char *const names[VB__ERR_COUNT] = {
#define VB__ERR_NAME(name, msg) [VB__IDX_##name] = #name,
    VB_ERR_MAP(VB__ERR_NAME)
#undef VB__ERR_NAME
};

const char *vb_strerror(int err)
{
    if (err == 0)
        return "success";
    if (err < 0 && -err <= VB__ERR_COUNT)
        return messages[-err - 1];
    return "unknown error";
}

const char *vb_err_name(int err)
{
    if (err == 0)
        return "OK";
    if (err < 0 && -err <= VB__ERR_COUNT)
        return names[-err - 1];
    return "EUNKNOWN";
}
