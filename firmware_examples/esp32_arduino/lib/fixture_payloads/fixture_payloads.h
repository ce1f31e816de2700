// fixture_payloads: the topics and JSON payloads fixture-agent's MQTT ingest reads (docs/mqtt.md), with no
// Arduino dependency, so the same code runs on the ESP32 and is compiled and checked on a PC by the agent's tests.
//
// Every function writes a NUL-terminated string into buf (at most n bytes) and returns its length, or -1 if it
// does not fit (nothing sensible is published then). Numbers are written with enough digits to survive the
// trip. JSON has no NaN: an environment reading that is NaN or infinite is left out (the sensor gave nothing), and
// a self-test step's NaN value, low or high means "none" and is not written.
#ifndef FIXTURE_PAYLOADS_H
#define FIXTURE_PAYLOADS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// assets/<id>/counters, devices/<id>/selftest … ("assets", "counters"); the id must not contain '/', '+', '#'
int fp_topic(char *buf, size_t n, const char *family, const char *device_id, const char *kind);

// {"running_count": R, "total_count": T} — absolute values: a lost or repeated message cannot skew them
int fp_counters(char *buf, size_t n, uint32_t running_count, uint32_t total_count);

// {"status": "online"} (running, idle, error, maintenance, offline …)
int fp_status(char *buf, size_t n, const char *status);

typedef struct {
    const char *name;
    double value;
    const char *unit;  // may be NULL
} fp_reading;

// {"environment": {"temperature": 24.5, …}, "units": {"temperature": "C", …}}
int fp_environment(char *buf, size_t n, const fp_reading *readings, size_t count);

typedef struct {
    const char *name;
    double value;      // measured value (NaN: none)
    const char *unit;  // may be NULL
    double low;        // NaN: no low limit
    double high;       // NaN: no high limit
    const char *status;  // the firmware's own word ("P", "F" …) or NULL: the agent judges value against limits
} fp_step;

// {"result": "P", "duration_ms": D, "steps": [{"name":…, "value":…, "unit":…, "low":…, "high":…, "status":…}]}
int fp_selftest(char *buf, size_t n, const char *result, uint32_t duration_ms, const fp_step *steps, size_t count);

#ifdef __cplusplus
}
#endif

#endif
