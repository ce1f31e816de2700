// ESP32 (Arduino framework) device for fixture-agent: absolute counters from a debounced actuation input,
// a periodic self-test, environment readings, and status with a last will; while the broker is unreachable,
// messages wait in a bounded outbox in flash and go out in order when it returns. Topics, payloads and the outbox
// come from lib/fixture_payloads (no Arduino dependency; the agent's tests compile them on a PC).
#include <Arduino.h>
#include <LittleFS.h>
#include <PubSubClient.h>
#include <Preferences.h>
#include <WiFi.h>

#include "config.h"
#include "fixture_outbox.h"
#include "fixture_payloads.h"

static WiFiClient net;
static PubSubClient mqtt(net);
static Preferences prefs;

static volatile uint32_t pending_presses = 0;  // counted in the interrupt, folded into the totals in loop()
static volatile uint32_t last_edge_ms = 0;
static uint32_t running_count = 0, total_count = 0;
static bool counters_dirty = true;
static char topic[96], payload[1024];
static fp_outbox outbox;  // in LittleFS, reached through the VFS at /littlefs

// Both edges: a press is a falling edge after 30 ms of quiet; every edge, on pressing and on release, restarts the
// quiet, so a release that bounces is not a second press.
static void IRAM_ATTR on_edge() {
    uint32_t now = millis();
    bool quiet = now - last_edge_ms >= 30;
    last_edge_ms = now;
    if (quiet && digitalRead(COUNTER_PIN) == LOW) pending_presses++;
}

static bool publish(const char *kind, const char *family, bool retain, int len) {
    if (len < 0 || fp_topic(topic, sizeof topic, family, DEVICE_ID, kind) < 0) return false;
    return mqtt.publish(topic, payload, retain);
}

// A message goes out now only if nothing older is waiting; otherwise it waits in flash behind the others.
static void emit(const char *kind, const char *family, int len) {
    if (len < 0 || fp_topic(topic, sizeof topic, family, DEVICE_ID, kind) < 0) return;
    if (outbox.count || !mqtt.connected() || !mqtt.publish(topic, payload)) {
        if (fp_outbox_append(&outbox, topic, payload) != 0) Serial.println("outbox: flash full, message lost");
    }
}

// Oldest first, a few per loop. PubSubClient publishes at QoS 0: "sent" means written to the connection, so a
// message written just as the connection dies can still be lost (see README).
static void send_waiting() {
    for (int i = 0; i < 20 && outbox.count && mqtt.connected(); ++i) {
        if (fp_outbox_peek(&outbox, topic, sizeof topic, payload, sizeof payload) != 1) {
            fp_outbox_pop(&outbox);  // unreadable: do not let it block everything behind it
            continue;
        }
        if (!mqtt.publish(topic, payload)) return;
        fp_outbox_pop(&outbox);
    }
}

// Never blocks the loop: one attempt when it is due, so counting and the outbox carry on while the broker is away.
static void keep_connected() {
    static uint32_t delay_ms = 1000, last_attempt = 0, wait_ms = 0;  // unsigned differences: millis() may wrap
    if (mqtt.connected() || millis() - last_attempt < wait_ms) return;
    last_attempt = millis();
    if (WiFi.status() != WL_CONNECTED) {
        WiFi.begin(WIFI_SSID, WIFI_PASSWORD);  // joining takes seconds: look again at the next attempt
    } else {
        char will[64];
        fp_status(will, sizeof will, "offline");
        fp_topic(topic, sizeof topic, "assets", DEVICE_ID, "status");
        // clean session false + fixed client id: what the Pi's broker queues for us is kept while we reconnect
        if (mqtt.connect(DEVICE_ID, MQTT_USER[0] ? MQTT_USER : nullptr, MQTT_PASSWORD[0] ? MQTT_PASSWORD : nullptr,
                         topic, 1, true, will, false)) {
            publish("status", "assets", true, fp_status(payload, sizeof payload, "online"));
            if (outbox.dropped) Serial.printf("outbox: %u oldest messages dropped while offline\n", outbox.dropped);
            outbox.dropped = 0;
            delay_ms = 1000;
            wait_ms = 0;  // the next drop is retried at once
            return;
        }
    }
    wait_ms = delay_ms + esp_random() % (delay_ms / 5 + 1);  // backoff with jitter, up to a minute
    delay_ms = delay_ms < 60000 ? delay_ms * 2 : 60000;
}

static void selftest() {
    uint32_t t0 = millis();
    float vcc = analogReadMilliVolts(34) * 2 / 1000.0f;  // a divider on GPIO34: adapt to the fixture
    fp_step steps[] = {{"vcc", vcc, "V", 3.2, 3.4, nullptr},
                       {"counter_input_idle", (double)digitalRead(COUNTER_PIN), nullptr, 1, 1, nullptr}};
    emit("selftest", "devices",
         fp_selftest(payload, sizeof payload, "P", millis() - t0, steps, sizeof steps / sizeof steps[0]));
}

static void environment() {
    fp_reading r[] = {{"chip_temperature", temperatureRead(), "C"}};
    emit("environment", "assets", fp_environment(payload, sizeof payload, r, 1));
}

void setup() {
    Serial.begin(115200);
    prefs.begin("fixture", false);
    if (!LittleFS.begin(true) || fp_outbox_open(&outbox, "/littlefs", OUTBOX_MESSAGES) != 0)
        Serial.println("outbox: no flash file system, messages made while offline are lost");
    running_count = prefs.getUInt("running", 0);  // counters survive a reset (flash, written on change)
    total_count = prefs.getUInt("total", 0);
    pinMode(COUNTER_PIN, INPUT_PULLUP);
    attachInterrupt(digitalPinToInterrupt(COUNTER_PIN), on_edge, CHANGE);
    mqtt.setServer(MQTT_HOST, MQTT_PORT);
    mqtt.setBufferSize(1024);
    WiFi.mode(WIFI_STA);
}

void loop() {
    static uint32_t next_selftest = 0, next_environment = 0;
    keep_connected();
    noInterrupts();
    uint32_t presses = pending_presses;
    pending_presses = 0;
    interrupts();
    if (presses) {
        running_count += presses;
        total_count += presses;
        prefs.putUInt("total", total_count);  // total first: a power cut in between never leaves running > total
        prefs.putUInt("running", running_count);
        counters_dirty = true;
    }
    if (counters_dirty) {  // absolute values: a lost message is repaired by the next one
        emit("counters", "assets", fp_counters(payload, sizeof payload, running_count, total_count));
        counters_dirty = false;
    }
    uint32_t now = millis();
    if ((int32_t)(now - next_selftest) >= 0) {
        selftest();
        next_selftest = now + SELFTEST_EVERY_MS;
    }
    if ((int32_t)(now - next_environment) >= 0) {
        environment();
        next_environment = now + ENVIRONMENT_EVERY_MS;
    }
    send_waiting();
    mqtt.loop();
    delay(10);
}
