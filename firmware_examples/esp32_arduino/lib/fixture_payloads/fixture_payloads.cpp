// See fixture_payloads.h. Plain C-style code (snprintf into caller's buffers): no heap, no String, no Arduino.
#include "fixture_payloads.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

namespace {

struct Out {
    char *buf;
    size_t n;
    size_t len;
    bool ok;
};

void put(Out &o, const char *fmt, ...) {
    if (!o.ok) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(o.buf + o.len, o.n - o.len, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= o.n - o.len) {
        o.ok = false;
        return;
    }
    o.len += (size_t)w;
}

// A JSON string: quotes, backslashes and control characters escaped.
void put_str(Out &o, const char *s) {
    put(o, "\"");
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p && o.ok; ++p) {
        if (*p == '"' || *p == '\\') put(o, "\\%c", *p);
        else if (*p < 0x20) put(o, "\\u%04x", *p);
        else put(o, "%c", *p);
    }
    put(o, "\"");
}

void put_num(Out &o, double v) {
    if (isnan(v) || isinf(v)) put(o, "null");
    else put(o, "%.9g", v);
}

int finish(Out &o) {
    if (!o.ok) {
        if (o.n) o.buf[0] = '\0';
        return -1;
    }
    return (int)o.len;
}

bool topic_level_ok(const char *s) {
    if (!s || !*s) return false;
    for (const char *p = s; *p; ++p)
        if (*p == '/' || *p == '+' || *p == '#') return false;
    return true;
}

}  // namespace

extern "C" int fp_topic(char *buf, size_t n, const char *family, const char *device_id, const char *kind) {
    Out o{buf, n, 0, n > 0};
    if (!topic_level_ok(family) || !topic_level_ok(device_id) || !topic_level_ok(kind)) o.ok = false;
    put(o, "%s/%s/%s", family, device_id, kind);
    return finish(o);
}

extern "C" int fp_counters(char *buf, size_t n, uint32_t running_count, uint32_t total_count) {
    Out o{buf, n, 0, n > 0};
    put(o, "{\"running_count\": %lu, \"total_count\": %lu}", (unsigned long)running_count,
        (unsigned long)total_count);
    return finish(o);
}

extern "C" int fp_status(char *buf, size_t n, const char *status) {
    Out o{buf, n, 0, n > 0};
    put(o, "{\"status\": ");
    put_str(o, status);
    put(o, "}");
    return finish(o);
}

extern "C" int fp_environment(char *buf, size_t n, const fp_reading *readings, size_t count) {
    Out o{buf, n, 0, n > 0};
    put(o, "{\"environment\": {");
    bool first = true;
    for (size_t i = 0; i < count; ++i) {
        if (isnan(readings[i].value) || isinf(readings[i].value)) continue;  // a sensor that gave nothing
        if (!first) put(o, ", ");
        first = false;
        put_str(o, readings[i].name);
        put(o, ": ");
        put_num(o, readings[i].value);
    }
    put(o, "}, \"units\": {");
    first = true;
    for (size_t i = 0; i < count; ++i) {
        if (!readings[i].unit || isnan(readings[i].value) || isinf(readings[i].value)) continue;
        if (!first) put(o, ", ");
        first = false;
        put_str(o, readings[i].name);
        put(o, ": ");
        put_str(o, readings[i].unit);
    }
    put(o, "}}");
    return finish(o);
}

extern "C" int fp_selftest(char *buf, size_t n, const char *result, uint32_t duration_ms, const fp_step *steps,
                           size_t count) {
    Out o{buf, n, 0, n > 0};
    put(o, "{\"result\": ");
    put_str(o, result);
    put(o, ", \"duration_ms\": %lu, \"steps\": [", (unsigned long)duration_ms);
    for (size_t i = 0; i < count; ++i) {
        const fp_step &s = steps[i];
        if (i) put(o, ", ");
        put(o, "{\"name\": ");
        put_str(o, s.name);
        if (!isnan(s.value)) {
            put(o, ", \"value\": ");
            put_num(o, s.value);
        }
        if (s.unit) {
            put(o, ", \"unit\": ");
            put_str(o, s.unit);
        }
        if (!isnan(s.low)) {
            put(o, ", \"low\": ");
            put_num(o, s.low);
        }
        if (!isnan(s.high)) {
            put(o, ", \"high\": ");
            put_num(o, s.high);
        }
        if (s.status) {
            put(o, ", \"status\": ");
            put_str(o, s.status);
        }
        put(o, "}");
    }
    put(o, "]}");
    return finish(o);
}
