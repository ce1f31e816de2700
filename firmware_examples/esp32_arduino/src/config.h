// Site settings: copy to config.h and edit (Wi-Fi, the Pi's broker, this device's id and pins).
#pragma once
#define WIFI_SSID "fixture-net"
#define WIFI_PASSWORD "change-me"
#define MQTT_HOST "192.168.10.20"  // the fixture's Pi
#define MQTT_PORT 1883
#define MQTT_USER "esp-7"          // per-device user from the broker's password file (or "" for anonymous)
#define MQTT_PASSWORD "change-me"
#define DEVICE_ID "ESP-7"          // the <id> level of every topic: no '/', '+', '#'
#define COUNTER_PIN 4              // actuation switch to GND (internal pull-up)
#define SELFTEST_EVERY_MS 600000UL
#define ENVIRONMENT_EVERY_MS 60000UL
#define OUTBOX_MESSAGES 200         // messages kept in flash while the broker is unreachable (oldest dropped)
