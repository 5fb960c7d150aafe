/*
moescope - tests/test_Chart.c
Unit tests of io/Chart: tick choice and formatting (hand-worked cases), the palette and
colour map properties the figures rely on (distinct styles, monotone lightness), and
written files: PNG signature and pixel size, PDF header and trailer, SVG well-formed
(parsed by Python's xml.etree when H5PY_PYTHON is set), the heatmap's orientation read
back from the PNG, the data sidecar's rows, atomic writes and error statuses.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <cairo.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/Chart.h"
#include "util/XUtils.h"

static char *tmpDir;

static int setupDir(void **state) {
    (void)state;
    char tmpl[] = "/tmp/moescope-chart.XXXXXX";
    char *d = mkdtemp(tmpl);
    if (!d)
        return -1;
    tmpDir = xStrdup(d);
    return 0;
}

static int teardownDir(void **state) {
    (void)state;
    char *cmd = xAsprintf("rm -rf '%s'", tmpDir);
    int rc = system(cmd);
    free(cmd);
    free(tmpDir);
    cairo_debug_reset_static_data();
    return rc == 0 ? 0 : -1;
}

static char *tmpPath(const char *name) {
    return xAsprintf("%s/%s", tmpDir, name);
}

static unsigned char *readAll(const char *path, long *size) {
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    *size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = xMalloc((size_t)*size + 1);
    size_t got = fread(buf, 1, (size_t)*size, fp);
    fclose(fp);
    buf[got] = 0;
    *size = (long)got;
    return buf;
}

/* ---------------------------------------------------------------- ticks */

static void assertTicks(double lo, double hi, int target, const double *want, int n_want) {
    double t[32];
    int n = Chart_niceTicks(lo, hi, target, t, 32);
    assert_int_equal(n, n_want);
    for (int i = 0; i < n; i++)
        assert_true(fabs(t[i] - want[i]) < 1e-12 * fmax(1, fabs(want[i])));
}

static void testNiceTicksHandWorked(void **state) {
    (void)state;
    /* (1 - 0) / 5 = 0.2: step 2e-1. */
    assertTicks(0, 1, 5, (double[]){0, 0.2, 0.4, 0.6, 0.8, 1.0}, 6);
    /* 20 / 4 = 5: step 5 from ceil(-3/5) = 0. */
    assertTicks(-3, 17, 4, (double[]){0, 5, 10, 15}, 4);
    /* 0.0032 / 3 = 0.00107: step 0.001. */
    assertTicks(0.001, 0.0042, 3, (double[]){0.001, 0.002, 0.003, 0.004}, 4);
    /* 7 / 2 = 3.5: step 5 (3.5 rounds up), negatives included, -0 printed as 0. */
    assertTicks(-5, 2, 2, (double[]){-5, 0}, 2);
    /* A degenerate range gives its one value. */
    assertTicks(3, 3, 5, (double[]){3}, 1);
}

static void testNiceTicksProperties(void **state) {
    (void)state;
    srand(7);
    for (int trial = 0; trial < 2000; trial++) {
        /* Ranges at any scale, at most ~5000 of their widths away from 0. */
        double scale = pow(10, rand() % 9 - 4);
        double lo = (rand() / (double)RAND_MAX - 0.5) * 10 * scale;
        double hi = lo + (rand() / (double)RAND_MAX + 1e-3) * scale;
        int target = 2 + rand() % 7;
        double t[64];
        int n = Chart_niceTicks(lo, hi, target, t, 64);
        assert_true(n >= 1 && n <= 2 * target + 2);
        double step = n > 1 ? t[1] - t[0] : 0;
        if (n > 1) {
            /* 1, 2 or 5 times a power of ten, equally spaced. */
            double m = step / pow(10, floor(log10(step) + 1e-9));
            assert_true(fabs(m - 1) < 1e-6 || fabs(m - 2) < 1e-6 || fabs(m - 5) < 1e-6 ||
                        fabs(m - 10) < 1e-6);
            for (int i = 2; i < n; i++)
                assert_true(fabs(t[i] - t[i - 1] - step) < 1e-6 * step);
        }
        for (int i = 0; i < n; i++) {
            double slack = 1e-9 * (hi - lo);
            assert_true(t[i] >= lo - slack && t[i] <= hi + slack);
        }
        /* No room for another tick at either end. */
        if (n > 1) {
            assert_true(t[0] - step < lo + 1e-9 * step);
            assert_true(t[n - 1] + step > hi - 1e-9 * step);
        }
    }
}

static void testFormatTick(void **state) {
    (void)state;
    char buf[32];
    Chart_formatTick(0.25, 0.05, buf, sizeof buf);
    assert_string_equal(buf, "0.25");
    Chart_formatTick(0.2, 0.2, buf, sizeof buf);
    assert_string_equal(buf, "0.2");
    Chart_formatTick(3, 1, buf, sizeof buf);
    assert_string_equal(buf, "3");
    Chart_formatTick(40, 20, buf, sizeof buf);
    assert_string_equal(buf, "40");
    Chart_formatTick(0.004, 0.001, buf, sizeof buf);
    assert_string_equal(buf, "0.004");
    Chart_formatTick(1500000, 500000, buf, sizeof buf);
    assert_string_equal(buf, "1.5e+06");
    Chart_formatTick(0, 0.5, buf, sizeof buf);
    assert_string_equal(buf, "0.0");
}

/* ---------------------------------------------------------------- colours */

static double luminance(const double rgb[3]) {
    double lin[3];
    for (int c = 0; c < 3; c++)
        lin[c] = rgb[c] <= 0.04045 ? rgb[c] / 12.92 : pow((rgb[c] + 0.055) / 1.055, 2.4);
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
}

static void testPaletteDistinct(void **state) {
    (void)state;
    for (int a = 0; a < CHART_STYLES; a++) {
        double ca[3];
        Chart_styleColor(a, ca);
        /* None is so light that it vanishes on white paper. */
        assert_true(luminance(ca) < 0.6);
        for (int b = a + 1; b < CHART_STYLES; b++) {
            double cb[3];
            Chart_styleColor(b, cb);
            double d = sqrt(pow(ca[0] - cb[0], 2) + pow(ca[1] - cb[1], 2) + pow(ca[2] - cb[2], 2));
            assert_true(d > 0.25);
        }
    }
}

static void testViridisMonotone(void **state) {
    (void)state;
    double prev = -1, first[3], last[3];
    Chart_viridis(0, first);
    Chart_viridis(1, last);
    /* The published end points #440154 and #fde725. */
    assert_true(fabs(first[0] - 0x44 / 255.0) < 1e-9 && fabs(first[2] - 0x54 / 255.0) < 1e-9);
    assert_true(fabs(last[0] - 0xfd / 255.0) < 1e-9 && fabs(last[1] - 0xe7 / 255.0) < 1e-9);
    for (int i = 0; i <= 200; i++) {
        double rgb[3];
        Chart_viridis(i / 200.0, rgb);
        double L = luminance(rgb);
        assert_true(L > prev); /* lightness rises: the map reads in greyscale */
        prev = L;
    }
}

/* ---------------------------------------------------------------- files */

static Chart *sampleChart(void) {
    Chart *c = Chart_new("A test chart: \xcf\x84 and \xe2\x89\xa4", 1, 3);
    double x[] = {1, 2, 4, 8}, y1[] = {0.5, 0.7, 0.9, 1.0}, y2[] = {0.4, NAN, 0.8, 0.95};
    Chart_setPanel(c, 0, "Lines", "k (experts)", "recall");
    Chart_addLine(c, 0, "oracle", x, y1, 4, 0, CHART_LINE | CHART_MARKERS, "src=a");
    Chart_addLine(c, 0, "mlp", x, y2, 4, 2, CHART_LINE | CHART_MARKERS, "src=b");
    Chart_setScale(c, 0, CHART_LOG, CHART_LINEAR);
    Chart_addVLine(c, 0, 3, "marker line", NULL);
    double counts[] = {3, 0, 5, 7};
    Chart_setPanel(c, 1, "Histogram", "frequency", "neurons");
    Chart_addNote(c, 1, "a note under the title");
    Chart_addHistogram(c, 1, "hist", 0, 1, counts, 4, 1, NULL);
    double bx[] = {0, 1, 2}, by[] = {0.3, 0.6, 0.2};
    Chart_setPanel(c, 2, "Bars", "layer", "fraction");
    Chart_addBars(c, 2, "first", bx, by, 3, 0, NULL);
    Chart_addBars(c, 2, "second, with comma", bx, y1, 3, 3, NULL);
    Chart_addDatum(c, 2, "datum", "d=1", NAN, 42.5, NAN);
    return c;
}

static void testWritePng(void **state) {
    (void)state;
    Chart *c = sampleChart();
    char *path = tmpPath("chart.png");
    char *cause = NULL;
    assert_int_equal(Chart_write(c, path, 500, 250, &cause), MS_OK);
    assert_null(cause);
    long size;
    unsigned char *buf = readAll(path, &size);
    assert_non_null(buf);
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    assert_true(size > 1000);
    assert_memory_equal(buf, sig, 8);
    assert_memory_equal(buf + 12, "IHDR", 4);
    uint32_t w = (uint32_t)buf[16] << 24 | buf[17] << 16 | buf[18] << 8 | buf[19];
    uint32_t h = (uint32_t)buf[20] << 24 | buf[21] << 16 | buf[22] << 8 | buf[23];
    /* points * dpi / 72, rounded up. */
    assert_int_equal(w, (uint32_t)ceil(500 * CHART_PNG_DPI / 72.0));
    assert_int_equal(h, (uint32_t)ceil(250 * CHART_PNG_DPI / 72.0));
    free(buf);
    free(path);
    Chart_delete(c);
}

static void testWritePdf(void **state) {
    (void)state;
    Chart *c = sampleChart();
    char *path = tmpPath("chart.pdf");
    char *cause = NULL;
    assert_int_equal(Chart_write(c, path, 500, 250, &cause), MS_OK);
    long size;
    unsigned char *buf = readAll(path, &size);
    assert_non_null(buf);
    assert_true(size > 1000);
    assert_memory_equal(buf, "%PDF-", 5);
    /* The trailer, and a font program embedded (FontFile2/FontFile3, not just a name). */
    assert_non_null(strstr((char *)buf + size - 64 > (char *)buf ? (char *)buf + size - 64
                                                                  : (char *)buf, "%%EOF"));
    assert_true(memmem(buf, (size_t)size, "/FontFile", 9) != NULL);
    free(buf);
    free(path);
    Chart_delete(c);
}

static void testWriteSvg(void **state) {
    (void)state;
    Chart *c = sampleChart();
    char *path = tmpPath("chart.SVG"); /* the extension is case-insensitive */
    char *cause = NULL;
    assert_int_equal(Chart_write(c, path, 500, 250, &cause), MS_OK);
    long size;
    unsigned char *buf = readAll(path, &size);
    assert_non_null(buf);
    assert_non_null(strstr((char *)buf, "<svg"));
    assert_non_null(strstr((char *)buf, "</svg>"));
    assert_non_null(strstr((char *)buf, "width=\"500pt\""));
    const char *py = getenv("H5PY_PYTHON");
    if (py && *py) {
        char *cmd = xAsprintf("'%s' -c 'import sys, xml.etree.ElementTree as E; "
                              "r = E.parse(sys.argv[1]).getroot(); "
                              "sys.exit(0 if r.tag.endswith(\"svg\") else 1)' '%s'",
                              py, path);
        assert_int_equal(system(cmd), 0);
        free(cmd);
    }
    free(buf);
    free(path);
    Chart_delete(c);
}

/* Mean position of the pixels of one exact colour. */
static bool centroid(cairo_surface_t *img, uint32_t rgb, double *cx, double *cy, long *count) {
    int w = cairo_image_surface_get_width(img), h = cairo_image_surface_get_height(img);
    int stride = cairo_image_surface_get_stride(img);
    unsigned char *data = cairo_image_surface_get_data(img);
    double sx = 0, sy = 0;
    long n = 0;
    for (int y = 0; y < h; y++) {
        const uint32_t *row = (const uint32_t *)(const void *)(data + (size_t)y * (size_t)stride);
        for (int x = 0; x < w; x++) {
            if ((row[x] & 0xffffff) == rgb) {
                sx += x;
                sy += y;
                n++;
            }
        }
    }
    *count = n;
    if (n == 0)
        return false;
    *cx = sx / n;
    *cy = sy / n;
    return true;
}

static void testHeatmapOrientation(void **state) {
    (void)state;
    /* Cells at 0.2, 0.4 / 0.6, 0.8 of vmax 1 take four viridis stops exactly. */
    float m[] = {0.2f, 0.4f, 0.6f, 0.8f};
    int bounds[] = {0, 1, 2};
    Chart *c = Chart_new(NULL, 1, 1);
    Chart_setHeatmap(c, 0, m, 2, 2, 1.0, bounds, 2, "value");
    char *path = tmpPath("heat.png");
    char *cause = NULL;
    assert_int_equal(Chart_write(c, path, 300, 300, &cause), MS_OK);
    cairo_surface_t *img = cairo_image_surface_create_from_png(path);
    assert_int_equal(cairo_surface_status(img), CAIRO_STATUS_SUCCESS);
    uint32_t colors[4];
    for (int i = 0; i < 4; i++) {
        double rgb[3];
        Chart_viridis(m[i], rgb);
        colors[i] = (uint32_t)lround(rgb[0] * 255) << 16 | (uint32_t)lround(rgb[1] * 255) << 8 |
                    (uint32_t)lround(rgb[2] * 255);
    }
    double x[4], y[4];
    long n[4];
    for (int i = 0; i < 4; i++) {
        assert_true(centroid(img, colors[i], &x[i], &y[i], &n[i]));
        assert_true(n[i] > 5000); /* a real cell, not a few colour-bar pixels */
    }
    /* Row 0 on top, column 0 on the left. */
    assert_true(x[0] + 50 < x[1] && x[2] + 50 < x[3]);
    assert_true(y[0] + 50 < y[2] && y[1] + 50 < y[3]);
    cairo_surface_destroy(img);
    free(path);
    Chart_delete(c);
}

static void testSidecar(void **state) {
    (void)state;
    Chart *c = sampleChart();
    char *path = tmpPath("chart.data.csv");
    char *cause = NULL;
    assert_int_equal(Chart_writeData(c, path, &cause), MS_OK);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char line[512];
    assert_non_null(fgets(line, sizeof line, fp));
    assert_string_equal(line, "panel,kind,series,source,x,y,z\n");
    int lines = 0, bars = 0, hist = 0, vline = 0, datum = 0;
    bool quoted = false, nan_empty = false;
    while (fgets(line, sizeof line, fp)) {
        lines += strstr(line, ",line,") != NULL;
        bars += strstr(line, ",bar,") != NULL;
        hist += strstr(line, ",hist,") != NULL;
        vline += strstr(line, ",vline,") != NULL;
        datum += strstr(line, ",datum,") != NULL;
        quoted = quoted || strstr(line, "\"second, with comma\"") != NULL;
        /* mlp's NaN point: empty y */
        nan_empty = nan_empty || strcmp(line, "0,line,mlp,src=b,2,,\n") == 0;
        if (strstr(line, ",datum,"))
            assert_string_equal(line, "2,datum,datum,d=1,,42.5,\n");
        if (strstr(line, ",hist,") && strstr(line, ",0.25,"))
            assert_string_equal(line, "1,hist,hist,,0.25,0,0.5\n");
    }
    fclose(fp);
    assert_int_equal(lines, 8);
    assert_int_equal(bars, 6);
    assert_int_equal(hist, 4);
    assert_int_equal(vline, 1);
    assert_int_equal(datum, 1);
    assert_true(quoted);
    assert_true(nan_empty);
    free(path);
    Chart_delete(c);
}

static void testErrorsAndAtomicity(void **state) {
    (void)state;
    Chart *c = sampleChart();
    char *cause = NULL;
    char *bad = tmpPath("chart.jpg");
    assert_int_equal(Chart_write(c, bad, 300, 200, &cause), MS_ERR_RANGE);
    assert_non_null(strstr(cause, "unknown figure format"));
    assert_non_null(strstr(cause, "chart.jpg"));
    free(cause);
    cause = NULL;
    assert_int_equal(access(bad, F_OK), -1);
    char *missing = tmpPath("no/such/dir/chart.png");
    assert_int_equal(Chart_write(c, missing, 300, 200, &cause), MS_ERR_IO);
    assert_non_null(strstr(cause, "no/such/dir/chart.png"));
    free(cause);
    cause = NULL;
    assert_int_equal(Chart_write(c, bad, 0, 200, &cause), MS_ERR_RANGE);
    free(cause);
    cause = NULL;
    /* Overwriting an existing figure replaces it; no temporary file stays behind. */
    char *path = tmpPath("again.png");
    assert_int_equal(Chart_write(c, path, 300, 200, &cause), MS_OK);
    assert_int_equal(Chart_write(c, path, 320, 200, &cause), MS_OK);
    DIR *d = opendir(tmpDir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)))
        assert_null(strstr(de->d_name, ".tmp."));
    closedir(d);
    assert_true(Chart_knownFormat("a/b.Pdf") && Chart_knownFormat("x.svg") &&
                !Chart_knownFormat("x.png/y") && !Chart_knownFormat("png"));
    free(path);
    free(missing);
    free(bad);
    Chart_delete(c);
    Chart_delete(NULL);
}

static void testEmptyPanels(void **state) {
    (void)state;
    /* Panels without data, a constant series and a one-point log axis still draw. */
    Chart *c = Chart_new(NULL, 2, 2);
    double x[] = {5}, y[] = {2};
    Chart_addLine(c, 1, "one", x, y, 1, 0, CHART_MARKERS, NULL);
    Chart_setScale(c, 2, CHART_LOG, CHART_LOG);
    Chart_addLine(c, 2, "log", x, y, 1, 1, CHART_LINE, NULL);
    double xs[] = {0, 1, 2}, ys[] = {-1, 0, 1};
    Chart_setScale(c, 3, CHART_LINEAR, CHART_LOG);
    Chart_addLine(c, 3, "nonpositive", xs, ys, 3, 2, CHART_LINE, NULL);
    char *path = tmpPath("empty.pdf");
    char *cause = NULL;
    assert_int_equal(Chart_write(c, path, 400, 300, &cause), MS_OK);
    free(path);
    Chart_delete(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(testNiceTicksHandWorked),
        cmocka_unit_test(testNiceTicksProperties),
        cmocka_unit_test(testFormatTick),
        cmocka_unit_test(testPaletteDistinct),
        cmocka_unit_test(testViridisMonotone),
        cmocka_unit_test(testWritePng),
        cmocka_unit_test(testWritePdf),
        cmocka_unit_test(testWriteSvg),
        cmocka_unit_test(testHeatmapOrientation),
        cmocka_unit_test(testSidecar),
        cmocka_unit_test(testErrorsAndAtomicity),
        cmocka_unit_test(testEmptyPanels),
    };
    return cmocka_run_group_tests(tests, setupDir, teardownDir);
}
