// ESP32 (Arduino framework) device for fixture-agent: absolute counters from a debounced actuation input,
// a periodic self-test, environment readings, and status with a last will. Topics and payloads come from
// lib/fixture_payloads (no Arduino dependency; the agent's tests compile it on a PC and check the agent reads it).
#include <Arduino.h>
#include <PubSubClient.h>
#include <Preferences.h>
#include <WiFi.h>

#include "config.h"
#include "fixture_payloads.h"

static WiFiClient net;
static PubSubClient mqtt(net);
static Preferences prefs;

static volatile uint32_t pending_presses = 0;  // counted in the interrupt, folded into the totals in loop()
static volatile uint32_t last_edge_ms = 0;
static uint32_t running_count = 0, total_count = 0;
static bool counters_dirty = true;
static char topic[96], payload[1024];

static void IRAM_ATTR on_press() {
    uint32_t now = millis();
    if (now - last_edge_ms > 30) pending_presses++;  // 30 ms debounce
    last_edge_ms = now;
}

static bool publish(const char *kind, const char *family, bool retain, int len) {
    if (len < 0 || fp_topic(topic, sizeof topic, family, DEVICE_ID, kind) < 0) return false;
    return mqtt.publish(topic, payload, retain);
}

static void connect_with_backoff() {
    static uint32_t delay_ms = 1000;
    while (!mqtt.connected()) {
        if (WiFi.status() != WL_CONNECTED) {
            WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
            for (int i = 0; i < 40 && WiFi.status() != WL_CONNECTED; ++i) delay(250);
        }
        char will[64];
        fp_status(will, sizeof will, "offline");
        fp_topic(topic, sizeof topic, "assets", DEVICE_ID, "status");
        // clean session false + fixed client id: what the Pi's broker queues for us is kept while we reconnect
        if (mqtt.connect(DEVICE_ID, MQTT_USER[0] ? MQTT_USER : nullptr, MQTT_PASSWORD[0] ? MQTT_PASSWORD : nullptr,
                         topic, 1, true, will, false)) {
            publish("status", "assets", true, fp_status(payload, sizeof payload, "online"));
            delay_ms = 1000;
            counters_dirty = true;
            return;
        }
        delay(delay_ms + (esp_random() % (delay_ms / 5 + 1)));  // exponential backoff with jitter, up to a minute
        delay_ms = delay_ms < 60000 ? delay_ms * 2 : 60000;
    }
}

static void selftest() {
    uint32_t t0 = millis();
    float vcc = analogReadMilliVolts(34) * 2 / 1000.0f;  // a divider on GPIO34: adapt to the fixture
    fp_step steps[] = {{"vcc", vcc, "V", 3.2, 3.4, nullptr},
                       {"counter_input_idle", (double)digitalRead(COUNTER_PIN), nullptr, 1, 1, nullptr}};
    publish("selftest", "devices", false,
            fp_selftest(payload, sizeof payload, "P", millis() - t0, steps, sizeof steps / sizeof steps[0]));
}

static void environment() {
    fp_reading r[] = {{"chip_temperature", temperatureRead(), "C"}};
    publish("environment", "assets", false, fp_environment(payload, sizeof payload, r, 1));
}

void setup() {
    Serial.begin(115200);
    prefs.begin("fixture", false);
    running_count = prefs.getUInt("running", 0);  // counters survive a reset (flash, written on change)
    total_count = prefs.getUInt("total", 0);
    pinMode(COUNTER_PIN, INPUT_PULLUP);
    attachInterrupt(digitalPinToInterrupt(COUNTER_PIN), on_press, FALLING);
    mqtt.setServer(MQTT_HOST, MQTT_PORT);
    mqtt.setBufferSize(1024);
    WiFi.mode(WIFI_STA);
}

void loop() {
    static uint32_t next_selftest = 0, next_environment = 0;
    connect_with_backoff();
    noInterrupts();
    uint32_t presses = pending_presses;
    pending_presses = 0;
    interrupts();
    if (presses) {
        running_count += presses;
        total_count += presses;
        prefs.putUInt("running", running_count);
        prefs.putUInt("total", total_count);
        counters_dirty = true;
    }
    if (counters_dirty) {  // absolute values: a lost message is repaired by the next one
        counters_dirty = !publish("counters", "assets", false,
                                  fp_counters(payload, sizeof payload, running_count, total_count));
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
    mqtt.loop();
    delay(10);
}
