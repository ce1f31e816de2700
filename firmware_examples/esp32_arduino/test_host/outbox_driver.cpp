// Host driver for the agent's tests: runs fixture_outbox commands from stdin, one result line each.
//   open <dir> <limit> | append <topic> <payload> | peek | pop | count
// The process may be killed between commands (a power cut); the next one opens what was left on "flash".
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture_outbox.h"

int main() {
    fp_outbox box;
    char cmd[16], a[512], b[1024], line[1600];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = '\0';
        a[0] = b[0] = '\0';
        if (sscanf(line, "%15s %511s %1023[^\n]", cmd, a, b) < 1) continue;
        if (!strcmp(cmd, "open")) {
            printf("%d\n", fp_outbox_open(&box, a, (unsigned)atoi(b)));
        } else if (!strcmp(cmd, "append")) {
            printf("%d\n", fp_outbox_append(&box, a, b));
        } else if (!strcmp(cmd, "peek")) {
            char topic[128], payload[1024];
            int r = fp_outbox_peek(&box, topic, sizeof topic, payload, sizeof payload);
            if (r == 1) printf("%s\t%s\n", topic, payload);
            else printf("%d\n", r);
        } else if (!strcmp(cmd, "pop")) {
            printf("%d\n", fp_outbox_pop(&box));
        } else if (!strcmp(cmd, "count")) {
            printf("%u %u\n", box.count, box.dropped);
        }
        fflush(stdout);
    }
    return 0;
}
