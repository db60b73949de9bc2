/* SPDX-License-Identifier: MIT */
/*
 * Metrics registry: counters, gauges and latency histograms with fixed label
 * sets, rendered as Prometheus text exposition format 0.0.4.
 *
 * DESIGN. Series are registered at setup (name, help, label pairs) and get a
 * small integer id. Each thread that records owns a shard (one slot per
 * series); recording is a relaxed load+store on the caller's own shard, so
 * the hot path never shares a cache line or takes a lock. A scrape sums all
 * shards under the registry mutex, which only setup and scrapes take.
 * Gauges are summed too: a gauge moved up on one thread and down on another
 * (calls active) adds up correctly; vb_metrics_gauge_set() is for gauges one
 * thread owns.
 */
#ifndef VB_CORE_METRICS_H
#define VB_CORE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/hist.h"

#define VB_METRICS_MAX_SCALARS 1024 /* counters + gauge series */
#define VB_METRICS_MAX_HISTS   128  /* histogram series */
#define VB_METRICS_MAX_SHARDS  128
#define VB_METRICS_MAX_LABELS  4

typedef enum vb_metric_type {
    VB_METRIC_COUNTER,
    VB_METRIC_GAUGE,
    VB_METRIC_HISTOGRAM,
    /* A histogram of long durations (calls): recorded in µs with
     * vb_metrics_observe_long(), exported with every bound and the sum
     * 1000 times larger, so its buckets run from 10 ms to 60000 s. */
    VB_METRIC_HISTOGRAM_LONG,
} vb_metric_type_t;

typedef struct vb_metrics vb_metrics_t;
typedef struct vb_metrics_shard vb_metrics_shard_t;

/* A series id, as returned by vb_metrics_add(). */
typedef uint32_t vb_metric_t;

/* A NULL-terminated list of label name/value pairs for vb_metrics_add(). */
#define VB_LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Creates an empty registry; NULL on allocation failure. Any thread. */
vb_metrics_t *vb_metrics_create(void);

/* Frees the registry and all its shards; accepts NULL. No thread may use
 * them afterwards. */
void vb_metrics_destroy(vb_metrics_t *m);

/* Registers one series of family `name` and stores its id in *id. `labels` is
 * NULL or a NULL-terminated list of name, value pairs (VB_LABELS). The first
 * series of a family fixes its type, help and label names; later series must
 * match (VB_EINVAL otherwise). Registering an existing series returns its id.
 * Histograms record nanoseconds and are exported in seconds. Copies all
 * strings. Errors: VB_EINVAL (bad name/label, mismatch), VB_ENOSPC (limits
 * above), VB_ENOMEM. Any thread; ids must reach recording threads through
 * some synchronisation (e.g. be registered before those threads start). */
int vb_metrics_add(vb_metrics_t *m, vb_metric_type_t type, const char *name,
                   const char *help, const char *const *labels,
                   vb_metric_t *id);

/* Creates a shard for the calling thread to record into; NULL on failure.
 * Freed by vb_metrics_destroy(). Any thread. */
vb_metrics_shard_t *vb_metrics_shard_create(vb_metrics_t *m);

/* Recording; only the thread that owns `s`. Ids of the wrong type are
 * ignored in release builds. */
void vb_metrics_counter_add(vb_metrics_shard_t *s, vb_metric_t id, uint64_t n);
void vb_metrics_gauge_add(vb_metrics_shard_t *s, vb_metric_t id, int64_t n);
void vb_metrics_gauge_set(vb_metrics_shard_t *s, vb_metric_t id, int64_t v);
void vb_metrics_observe_ns(vb_metrics_shard_t *s, vb_metric_t id, uint64_t ns);
static inline void vb_metrics_observe_long(vb_metrics_shard_t *s,
                                           vb_metric_t id, uint64_t ns)
{
    vb_metrics_observe_ns(s, id, ns / 1000u);
}

/* Renders every series as Prometheus text 0.0.4 into a malloc'd string
 * (*out, NUL-terminated, caller frees) of *len bytes. Returns 0 or
 * VB_ENOMEM. Any thread; takes the registry mutex. */
int vb_metrics_render(vb_metrics_t *m, char **out, size_t *len);

/* Appends the standard process series (process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds, process_max_fds, process_start_time_seconds), read
 * from /proc/self now, to the malloc'd text of vb_metrics_render() (*text
 * is reallocated, *len updated). A value that cannot be read is left out.
 * Returns 0 or VB_ENOMEM (then *text is unchanged). Any thread. */
int vb_metrics_append_process(char **text, size_t *len);

/* ---- for tests and tools ---- */
/* Used by tests, not by the server (which only renders); they stay here
 * because they read the shards under the registry lock. */

/* Current value summed over shards; any thread. For tests and reports. */
int64_t vb_metrics_value(vb_metrics_t *m, vb_metric_t id);

/* Merges a histogram series over all shards into `out` (initialised here);
 * returns VB_EINVAL if `id` is not a histogram. Any thread. */
int vb_metrics_hist(vb_metrics_t *m, vb_metric_t id, vb_hist_t *out);

#endif
