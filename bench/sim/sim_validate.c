/* SPDX-License-Identifier: MIT */
/*
 * vb-sim validation of the messages the server sends on a bidirectional
 * stream (spec §4): only `media` {event, streamSid, media{payload}},
 * `mark` {event, streamSid, mark{name}} and `clear` {event, streamSid};
 * no other keys, the stream's own streamSid, and a payload that is strict,
 * non-empty base64. Twilio answers anything else with warning 31951 and
 * drops the message; the simulator makes it a failure.
 */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "bench/sim/sim.h"

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int sim_b64_decode_strict(const char *s, size_t n, uint8_t **out,
                          size_t *outlen)
{
    if (n == 0 || n % 4 != 0)
        return -1;
    size_t pad = 0;
    if (s[n - 1] == '=')
        pad++;
    if (s[n - 2] == '=')
        pad++;
    uint8_t *o = malloc(n / 4 * 3);
    if (o == NULL)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        for (int j = 0; j < 4; j++) {
            bool last = i + 4 == n;
            if (last && s[i + j] == '=' && j >= 4 - (int)pad) {
                v[j] = 0;
                continue;
            }
            v[j] = b64val(s[i + j]);
            if (v[j] < 0) {
                free(o);
                return -1;
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                     (uint32_t)v[2] << 6 | (uint32_t)v[3];
        o[k++] = (uint8_t)(w >> 16);
        o[k++] = (uint8_t)(w >> 8);
        o[k++] = (uint8_t)w;
    }
    /* Padding bits must be zero (canonical encoding). */
    const char *tail = s + n - 4;
    if ((pad == 1 && (b64val(tail[2]) & 0x3) != 0) ||
        (pad == 2 && (b64val(tail[1]) & 0xF) != 0)) {
        free(o);
        return -1;
    }
    *out = o;
    *outlen = k - pad;
    return 0;
}

static int count_keys(const cJSON *o)
{
    int n = 0;
    for (const cJSON *k = o->child; k != NULL; k = k->next)
        n++;
    return n;
}

/* True if the object has exactly the keys listed (and no duplicates). */
static bool exact_keys(const cJSON *o, const char *const *keys)
{
    int want = 0;
    for (; keys[want] != NULL; want++)
        if (cJSON_GetObjectItemCaseSensitive(o, keys[want]) == NULL)
            return false;
    return count_keys(o) == want;
}

int sim_validate_outbound(const char *json, size_t len, const char *stream_sid,
                          sim_out_msg_t *out, char *err, size_t errsz)
{
    memset(out, 0, sizeof *out);
    cJSON *j = cJSON_ParseWithLength(json, len);
    int rc = -1;
    if (j == NULL || !cJSON_IsObject(j)) {
        snprintf(err, errsz, "not a JSON object: %.80s", json);
        goto done;
    }
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(j, "event");
    if (!cJSON_IsString(ev)) {
        snprintf(err, errsz, "no string \"event\": %.80s", json);
        goto done;
    }
    const cJSON *sid = cJSON_GetObjectItemCaseSensitive(j, "streamSid");
    if (!cJSON_IsString(sid)) {
        snprintf(err, errsz, "%s without a string streamSid", ev->valuestring);
        goto done;
    }
    if (strcmp(sid->valuestring, stream_sid) != 0) {
        snprintf(err, errsz, "%s for streamSid %.40s, expected %s",
                 ev->valuestring, sid->valuestring, stream_sid);
        goto done;
    }
    if (strcmp(ev->valuestring, "media") == 0) {
        static const char *const k[] = {"event", "streamSid", "media", NULL};
        static const char *const mk[] = {"payload", NULL};
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "media");
        if (!exact_keys(j, k) || !cJSON_IsObject(m) || !exact_keys(m, mk)) {
            snprintf(err, errsz,
                     "media must be exactly {event, streamSid, "
                     "media{payload}}: %.120s",
                     json);
            goto done;
        }
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(m, "payload");
        if (!cJSON_IsString(p) ||
            sim_b64_decode_strict(p->valuestring, strlen(p->valuestring),
                                  &out->audio, &out->audio_len) != 0 ||
            out->audio_len == 0) {
            snprintf(err, errsz,
                     "media payload is not valid non-empty "
                     "base64");
            goto done;
        }
        out->kind = SIM_OUT_MEDIA;
    } else if (strcmp(ev->valuestring, "mark") == 0) {
        static const char *const k[] = {"event", "streamSid", "mark", NULL};
        static const char *const mk[] = {"name", NULL};
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "mark");
        if (!exact_keys(j, k) || !cJSON_IsObject(m) || !exact_keys(m, mk) ||
            !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "name"))) {
            snprintf(err, errsz,
                     "mark must be exactly {event, streamSid, "
                     "mark{name: string}}: %.120s",
                     json);
            goto done;
        }
        out->mark =
            strdup(cJSON_GetObjectItemCaseSensitive(m, "name")->valuestring);
        out->kind = SIM_OUT_MARK;
    } else if (strcmp(ev->valuestring, "clear") == 0) {
        static const char *const k[] = {"event", "streamSid", NULL};
        if (!exact_keys(j, k)) {
            snprintf(err, errsz,
                     "clear must be exactly {event, streamSid}: %.120s", json);
            goto done;
        }
        out->kind = SIM_OUT_CLEAR;
    } else {
        snprintf(err, errsz,
                 "event \"%.40s\" is not one a stream may send (media, "
                 "mark, clear)",
                 ev->valuestring);
        goto done;
    }
    rc = 0;
done:
    cJSON_Delete(j);
    return rc;
}
