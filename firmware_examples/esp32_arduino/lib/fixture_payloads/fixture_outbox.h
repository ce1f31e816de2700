// fixture_outbox: unsent messages kept in flash while the broker is unreachable, oldest first, sent in order when
// it returns. Plain C stdio (on the ESP32, LittleFS is mounted into the VFS, so fopen("/littlefs/...") is flash),
// so the agent's tests compile and exercise the same code on a PC.
//
// The format is the MicroPython example's: one "topic<TAB>payload\n" line per message in outbox.txt, and in
// outbox.pos the offset of the first line not yet sent. Bounded: with `limit` messages waiting the oldest is dropped
// for each new one and counted in `dropped`. A line cut short by a power cut is dropped when the outbox is opened.
#ifndef FIXTURE_OUTBOX_H
#define FIXTURE_OUTBOX_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FP_OUTBOX_LINE 1280  // topic + payload + tab + newline + NUL; a longer message is refused

typedef struct {
    char path[96];
    char pos_path[96];
    unsigned limit;
    unsigned count;    // messages waiting
    unsigned dropped;  // oldest messages dropped for newer ones since the last report
    long pos;          // offset of the oldest waiting line
} fp_outbox;

// Open (or create) the outbox in `dir`; counts what a previous run left. 0, or -1 if dir is unusable.
int fp_outbox_open(fp_outbox *o, const char *dir, unsigned limit);

// Keep a message behind the others. 0, or -1 (too long, or flash full: the message is lost and said so).
int fp_outbox_append(fp_outbox *o, const char *topic, const char *payload);

// The oldest message: 1 and topic/payload filled, 0 if none waits, -1 on a read error.
int fp_outbox_peek(fp_outbox *o, char *topic, size_t topic_n, char *payload, size_t payload_n);

// Forget the oldest message (the broker took it, or it was dropped for a newer one). 0, or -1.
int fp_outbox_pop(fp_outbox *o);

#ifdef __cplusplus
}
#endif

#endif
