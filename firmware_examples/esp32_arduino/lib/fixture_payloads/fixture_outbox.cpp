#include "fixture_outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const long COMPACT_BYTES = 16384;  // rewrite the file once this much of it is already sent

static int write_pos(const fp_outbox *o) {
    FILE *f = fopen(o->pos_path, "w");
    if (!f) return -1;
    int ok = fprintf(f, "%ld", o->pos) > 0;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

// Read one line at o->pos into buf; its length incl. the newline, 0 at the end, -1 if cut short (no newline).
static long line_at(FILE *f, char *buf, size_t n) {
    if (!fgets(buf, (int)n, f)) return 0;
    size_t len = strlen(buf);
    return (len && buf[len - 1] == '\n') ? (long)len : -1;
}

// Keep only the unsent, complete lines. The offset is reset before the new file replaces the old one: a power cut
// in between resends what was sent (duplicates), where the other order would skip messages.
static int compact(fp_outbox *o) {
    char tmp[sizeof o->path + 4], line[FP_OUTBOX_LINE];
    snprintf(tmp, sizeof tmp, "%s.new", o->path);
    FILE *src = fopen(o->path, "r"), *dst = fopen(tmp, "w");
    if (!src || !dst) {
        if (src) fclose(src);
        if (dst) fclose(dst);
        return -1;
    }
    fseek(src, o->pos, SEEK_SET);
    unsigned n = 0;
    while (line_at(src, line, sizeof line) > 0) {
        fputs(line, dst);
        n++;
    }
    fclose(src);
    if (fclose(dst) != 0) return -1;
    o->pos = 0;
    o->count = n;
    if (write_pos(o) != 0) return -1;
    return rename(tmp, o->path) == 0 ? 0 : -1;
}

int fp_outbox_open(fp_outbox *o, const char *dir, unsigned limit) {
    memset(o, 0, sizeof *o);
    if (snprintf(o->path, sizeof o->path, "%s/outbox.txt", dir) >= (int)sizeof o->path) return -1;
    snprintf(o->pos_path, sizeof o->pos_path, "%s/outbox.pos", dir);
    o->limit = limit ? limit : 1;
    FILE *p = fopen(o->pos_path, "r");
    if (p) {
        if (fscanf(p, "%ld", &o->pos) != 1 || o->pos < 0) o->pos = 0;  // torn: resend from the start
        fclose(p);
    }
    FILE *f = fopen(o->path, "r");
    if (!f) {
        o->pos = 0;
        return 0;
    }
    char line[FP_OUTBOX_LINE];
    long len;
    bool torn = false;
    if (o->pos > 0) {  // an offset must be at a line start inside the file, or it is not this file's
        if (fseek(f, o->pos - 1, SEEK_SET) != 0 || fgetc(f) != '\n') o->pos = 0;
    }
    fseek(f, o->pos, SEEK_SET);
    while ((len = line_at(f, line, sizeof line)) != 0) {
        if (len < 0) {
            torn = true;
            break;
        }
        o->count++;
    }
    fclose(f);
    return torn ? compact(o) : 0;
}

int fp_outbox_append(fp_outbox *o, const char *topic, const char *payload) {
    if (strlen(topic) + strlen(payload) + 3 > FP_OUTBOX_LINE || strchr(topic, '\t')) return -1;
    if (o->count >= o->limit) {
        if (fp_outbox_pop(o) != 0) return -1;
        o->dropped++;
    }
    FILE *f = fopen(o->path, "a");
    if (!f) return -1;
    int ok = fprintf(f, "%s\t%s\n", topic, payload) > 0;
    if (fclose(f) != 0 || !ok) return -1;
    o->count++;
    return 0;
}

// The oldest waiting line into buf: as line_at, or -1 if the file cannot be read.
static long read_oldest(const fp_outbox *o, char *buf, size_t n) {
    FILE *f = fopen(o->path, "r");
    if (!f) return -1;
    fseek(f, o->pos, SEEK_SET);
    long len = line_at(f, buf, n);
    fclose(f);
    return len;
}

int fp_outbox_peek(fp_outbox *o, char *topic, size_t topic_n, char *payload, size_t payload_n) {
    if (!o->count) return 0;
    char line[FP_OUTBOX_LINE];
    long len = read_oldest(o, line, sizeof line);
    char *tab = len > 0 ? strchr(line, '\t') : NULL;
    if (!tab) return -1;
    *tab = '\0';
    line[len - 1] = '\0';
    if (strlen(line) >= topic_n || strlen(tab + 1) >= payload_n) return -1;
    strcpy(topic, line);
    strcpy(payload, tab + 1);
    return 1;
}

int fp_outbox_pop(fp_outbox *o) {
    if (!o->count) return 0;
    char line[FP_OUTBOX_LINE];
    long len = read_oldest(o, line, sizeof line);
    if (len <= 0) return -1;
    o->pos += len;
    o->count--;
    if (!o->count) {
        remove(o->pos_path);  // the offset first: it must never outlive its file
        remove(o->path);
        o->pos = 0;
        return 0;
    }
    return o->pos >= COMPACT_BYTES ? compact(o) : write_pos(o);
}
