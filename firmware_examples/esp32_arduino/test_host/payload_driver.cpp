// Host driver for the agent's tests: prints "topic<TAB>payload" lines built by fixture_payloads, exactly as the
// firmware builds them, plus one line per buffer-overflow check ("overflow<TAB><return value>").
#include <math.h>
#include <stdio.h>

#include "fixture_payloads.h"

static void emit(const char *family, const char *device, const char *kind, int (*build)(char *, size_t, void *),
                 void *arg) {
    char topic[128], payload[1024];
    if (fp_topic(topic, sizeof topic, family, device, kind) < 0 || build(payload, sizeof payload, arg) < 0) {
        printf("error\t%s/%s/%s\n", family, device, kind);
        return;
    }
    printf("%s\t%s\n", topic, payload);
}

static int counters(char *b, size_t n, void *) { return fp_counters(b, n, 12, 3400); }
static int status(char *b, size_t n, void *) { return fp_status(b, n, "online"); }
static int environment(char *b, size_t n, void *) {
    fp_reading r[] = {{"temperature", 24.5, "C"}, {"humidity", 41.0, "%"}, {"vacuum \"kPa\"", NAN, nullptr}};
    return fp_environment(b, n, r, 3);
}
static int selftest(char *b, size_t n, void *) {
    fp_step s[] = {{"vcc", 3.31, "V", 3.2, 3.4, nullptr},
                   {"idle_current", 0.028, "A", NAN, 0.001, "P"},  // the firmware says P; the agent judges
                   {"flash_crc", NAN, nullptr, NAN, NAN, "Passed"}};
    return fp_selftest(b, n, "P", 1250, s, 3);
}

int main() {
    emit("assets", "ESP-7", "counters", counters, nullptr);
    emit("assets", "ESP-7", "status", status, nullptr);
    emit("assets", "ESP-7", "environment", environment, nullptr);
    emit("devices", "ESP-7", "selftest", selftest, nullptr);
    char small[8], topic[64];
    printf("overflow\t%d\n", fp_counters(small, sizeof small, 1, 2));
    printf("overflow\t%d\n", fp_topic(topic, sizeof topic, "assets", "bad/id", "counters"));
    return 0;
}
