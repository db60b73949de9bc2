/* SPDX-License-Identifier: MIT */
/*
 * Error codes. Every fallible function returns 0 on success or a negative
 * VB_E* code from the one table below; vb_strerror() and vb_err_name() turn a
 * code into text. "Need more bytes" is reported as VB_EAGAIN, a result rather
 * than a failure, as nginx's NGX_AGAIN and wslay's WANT_READ are.
 */
#ifndef VB_CORE_ERR_H
#define VB_CORE_ERR_H

/* X(name, message) */
#define VB_ERR_MAP(X)                                        \
    X(EINVAL, "invalid argument")                            \
    X(ENOMEM, "out of memory")                               \
    X(EAGAIN, "try again (would block, or need more bytes)") \
    X(ENOSPC, "no space left (ring or buffer full)")         \
    X(EMSGSIZE, "message too long")                          \
    X(ERANGE, "value out of range")                          \
    X(ENOENT, "no such entry")                               \
    X(EEXIST, "already exists")                              \
    X(EBUSY, "busy or already started")                      \
    X(EPROTO, "protocol error")                              \
    X(EIO, "input/output error")                             \
    X(ETIMEDOUT, "timed out")                                \
    X(ECLOSED, "connection closed")                          \
    X(ECONNREFUSED, "connection refused")                    \
    X(ETLS, "TLS failure")                                   \
    X(ECERT, "certificate verification failed")              \
    X(EAUTH, "authentication or signature check failed")     \
    X(ECONFIG, "invalid configuration")                      \
    X(ENOTSUP, "not supported")                              \
    X(ECANCELED, "operation canceled")                       \
    X(ESTALE, "stale call id")                               \
    X(ESYS, "system call failed")

enum vb__err_index {
#define VB__ERR_IDX(name, msg) VB__IDX_##name,
    VB_ERR_MAP(VB__ERR_IDX)
#undef VB__ERR_IDX
        VB__ERR_COUNT
};

enum vb_err {
    VB_OK = 0,
#define VB__ERR_CODE(name, msg) VB_##name = -(VB__IDX_##name + 1),
    VB_ERR_MAP(VB__ERR_CODE)
#undef VB__ERR_CODE
};

/* Human-readable text for a VB_E* code (or 0); "unknown error" otherwise.
 * Returns a static string; any thread. */
const char *vb_strerror(int err);

/* The code's name without the prefix ("EINVAL"); "OK" for 0, "EUNKNOWN"
 * otherwise. Static string; any thread. */
const char *vb_err_name(int err);

#endif
