/* Preloaded before libfaketime in the fault harness (see harness.py, _clock_env).
 *
 * libfaketime 0.9.10 shifts an absolute CLOCK_MONOTONIC deadline (CPython's time.sleep uses one) by the faked
 * wall-clock offset even with FAKETIME_DONT_FAKE_MONOTONIC=1: an offset further back than the machine's uptime
 * gives EINVAL, and paho's network thread died of it. The monotonic clock is not faked in the harness, so its
 * sleeps go straight to the kernel; every other clock is left to libfaketime. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int clock_nanosleep(clockid_t id, int flags, const struct timespec *req, struct timespec *rem)
{
    if (id == CLOCK_MONOTONIC) {
        long r = syscall(SYS_clock_nanosleep, id, flags, req, rem);
        return r == 0 ? 0 : errno;
    }
    int (*next)(clockid_t, int, const struct timespec *, struct timespec *) =
        (int (*)(clockid_t, int, const struct timespec *, struct timespec *))dlsym(RTLD_NEXT, "clock_nanosleep");
    return next(id, flags, req, rem);
}
