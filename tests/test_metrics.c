/* SPDX-License-Identifier: MIT */
#include "core/err.h"
#include "core/metrics.h"
#include "tests/test.h"

#include <pthread.h>
#include <sys/wait.h>

/* Runs `promtool check metrics` on `text`; returns its exit status and puts
 * its output in `log`. */
static int promtool_check(const char *text, char *log, size_t logsz)
{
    char path[512], cmd[1200];
    snprintf(path, sizeof(path), "%s/metrics.txt", vb_test_tmpdir());
    FILE *f = fopen(path, "w");
    ASSERT_NOT_NULL(f);
    fputs(text, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    ASSERT_NOT_NULL(p);
    size_t n = fread(log, 1, logsz - 1, p);
    log[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(metrics_render_passes_promtool)
{
    vb_metrics_t *m = vb_metrics_create();
    vb_metric_t c, g1, g2, h1, h2, again;
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_COUNTER, "vb_test_events_total",
                             "Events seen.", NULL, &c),
              0);
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_GAUGE, "vb_test_queue_depth",
                             "Queue depth by ring.\\ with \"quotes\"\nline",
                             VB_LABELS("ring", "in"), &g1),
              0);
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_GAUGE, "vb_test_queue_depth", "x",
                             VB_LABELS("ring", "we\"ird\\va\nlue"), &g2),
              0);
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_HISTOGRAM, "vb_test_latency_seconds",
                             "Latency by stage.", VB_LABELS("stage", "dsp"),
                             &h1),
              0);
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_HISTOGRAM, "vb_test_latency_seconds",
                             "Latency by stage.", VB_LABELS("stage", "gemini"),
                             &h2),
              0);
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_GAUGE, "vb_test_queue_depth", "x",
                             VB_LABELS("ring", "in"), &again),
              0);
    ASSERT_EQ(again, g1);

    vb_metrics_shard_t *a = vb_metrics_shard_create(m);
    vb_metrics_shard_t *b = vb_metrics_shard_create(m);
    ASSERT_NOT_NULL(a);
    ASSERT_NOT_NULL(b);
    vb_metrics_counter_add(a, c, 3);
    vb_metrics_counter_add(b, c, 4);
    vb_metrics_gauge_add(a, g1, 5);
    vb_metrics_gauge_add(b, g1, -2);
    vb_metrics_gauge_set(a, g2, 42);
    vb_metrics_observe_ns(a, h1, 150000);   /* 0.15 ms */
    vb_metrics_observe_ns(b, h1, 30000000); /* 30 ms */
    vb_metrics_observe_ns(b, h2, 2000000000ull);
    ASSERT_EQ(vb_metrics_value(m, c), 7);
    ASSERT_EQ(vb_metrics_value(m, g1), 3);
    ASSERT_EQ(vb_metrics_value(m, g2), 42);
    vb_hist_t hh;
    ASSERT_EQ(vb_metrics_hist(m, h1, &hh), 0);
    ASSERT_UEQ(vb_hist_count(&hh), 2);
    ASSERT_EQ(vb_metrics_hist(m, c, &hh), VB_EINVAL);

    char *text;
    size_t len;
    ASSERT_EQ(vb_metrics_render(m, &text, &len), 0);
    ASSERT_EQ(strlen(text), len);
    ASSERT_STR_CONTAINS(text, "# TYPE vb_test_events_total counter\n"
                              "vb_test_events_total 7\n");
    ASSERT_STR_CONTAINS(text, "vb_test_queue_depth{ring=\"in\"} 3\n");
    ASSERT_STR_CONTAINS(
        text, "vb_test_queue_depth{ring=\"we\\\"ird\\\\va\\nlue\"} 42");
    ASSERT_STR_CONTAINS(text, "# HELP vb_test_queue_depth Queue depth by "
                              "ring.\\\\ with \"quotes\"\\nline\n");
    ASSERT_STR_CONTAINS(
        text,
        "vb_test_latency_seconds_bucket{stage=\"dsp\",le=\"0.0001\"} 0\n");
    ASSERT_STR_CONTAINS(
        text,
        "vb_test_latency_seconds_bucket{stage=\"dsp\",le=\"0.00025\"} 1\n");
    ASSERT_STR_CONTAINS(
        text, "vb_test_latency_seconds_bucket{stage=\"dsp\",le=\"0.04\"} 2\n");
    ASSERT_STR_CONTAINS(
        text, "vb_test_latency_seconds_bucket{stage=\"dsp\",le=\"+Inf\"} 2\n");
    ASSERT_STR_CONTAINS(
        text, "vb_test_latency_seconds_sum{stage=\"dsp\"} 0.030150000\n");
    ASSERT_STR_CONTAINS(text,
                        "vb_test_latency_seconds_count{stage=\"gemini\"} 1\n");
    /* One HELP/TYPE per family, however many series. */
    const char *first = strstr(text, "# TYPE vb_test_latency_seconds");
    ASSERT_NULL(strstr(first + 1, "# TYPE vb_test_latency_seconds"));

    char log[4096];
    int st = promtool_check(text, log, sizeof(log));
    if (st != 0)
        vb_test_fail(__FILE__, __LINE__, "promtool exit %d:\n%s\n--\n%s", st,
                     log, text);
    free(text);
    vb_metrics_destroy(m);
}

TEST(metrics_rejects_bad_registrations)
{
    vb_metrics_t *m = vb_metrics_create();
    vb_metric_t id;
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_COUNTER, "9bad", "", NULL, &id),
              VB_EINVAL);
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_COUNTER, "bad-name", "", NULL, &id),
              VB_EINVAL);
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_COUNTER, "ok_total", "",
                             VB_LABELS("bad-label", "x"), &id),
              VB_EINVAL);
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_HISTOGRAM, "h_seconds", "",
                             VB_LABELS("le", "1"), &id),
              VB_EINVAL);
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_COUNTER, "ok_total", "",
                             VB_LABELS("route", "/a"), &id),
              0);
    /* Same family, different type or label names. */
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_GAUGE, "ok_total", "",
                             VB_LABELS("route", "/a"), &id),
              VB_EINVAL);
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_COUNTER, "ok_total", "",
                             VB_LABELS("path", "/a"), &id),
              VB_EINVAL);
    ASSERT_EQ(vb_metrics_add(m, VB_METRIC_COUNTER, "ok_total", "", NULL, &id),
              VB_EINVAL);
    /* Capacity is bounded and reported. */
    int rc = 0;
    char name[64];
    for (int i = 0; i < VB_METRICS_MAX_HISTS + 1 && rc == 0; i++) {
        snprintf(name, sizeof(name), "h%d_seconds", i);
        rc = vb_metrics_add(m, VB_METRIC_HISTOGRAM, name, "", NULL, &id);
    }
    ASSERT_EQ(rc, VB_ENOSPC);
    vb_metrics_destroy(m);
    vb_metrics_destroy(NULL);
}

/* Writers on their own shards while a scraper renders: sums are exact at the
 * end, and ThreadSanitizer sees no race. */
#define WRITERS    4
#define PER_WRITER 200000

static vb_metrics_t *shared;
static vb_metric_t s_counter, s_hist, s_gauge;

static void *writer(void *arg)
{
    (void)arg;
    vb_metrics_shard_t *s = vb_metrics_shard_create(shared);
    ASSERT_NOT_NULL(s);
    for (int i = 0; i < PER_WRITER; i++) {
        vb_metrics_counter_add(s, s_counter, 1);
        vb_metrics_gauge_add(s, s_gauge, (i & 1) ? -1 : 1);
        if (i % 16 == 0)
            vb_metrics_observe_ns(s, s_hist, 1000 + (uint64_t)i);
    }
    return NULL;
}

TEST_T(metrics_shards_sum_across_threads, 120)
{
    shared = vb_metrics_create();
    ASSERT_EQ(vb_metrics_add(shared, VB_METRIC_COUNTER, "w_total", "w", NULL,
                             &s_counter),
              0);
    ASSERT_EQ(
        vb_metrics_add(shared, VB_METRIC_GAUGE, "w_level", "w", NULL, &s_gauge),
        0);
    ASSERT_EQ(vb_metrics_add(shared, VB_METRIC_HISTOGRAM, "w_seconds", "w",
                             NULL, &s_hist),
              0);
    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, writer, NULL), 0);
    for (int k = 0; k < 20; k++) {
        char *text;
        size_t len;
        ASSERT_EQ(vb_metrics_render(shared, &text, &len), 0);
        ASSERT_STR_CONTAINS(text, "w_total ");
        free(text);
    }
    for (int i = 0; i < WRITERS; i++)
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
    ASSERT_EQ(vb_metrics_value(shared, s_counter), WRITERS * PER_WRITER);
    ASSERT_EQ(vb_metrics_value(shared, s_gauge), 0);
    vb_hist_t h;
    ASSERT_EQ(vb_metrics_hist(shared, s_hist, &h), 0);
    ASSERT_UEQ(vb_hist_count(&h), WRITERS * (PER_WRITER / 16));
    vb_metrics_destroy(shared);
}
