/*
 * systemd readiness without libsystemd: sd_notify's protocol is one datagram to the Unix socket
 * named by $NOTIFY_SOCKET ("@name" for the abstract namespace). Units use Type=notify; programs
 * send "READY=1" once they really serve, "RELOADING=1"/"READY=1" around a reload, "STOPPING=1"
 * when they begin to drain, and "STATUS=..." lines an operator sees in `systemctl status`.
 */
#ifndef HM_COMMON_SDNOTIFY_H
#define HM_COMMON_SDNOTIFY_H

/* Sends state (e.g. "READY=1\nSTATUS=serving") if $NOTIFY_SOCKET is set. Returns 1 if sent, 0 if
 * there is no notify socket, or a negative errno. Async-signal-safe apart from getenv(). */
int hm_sd_notify(const char *state);

#endif
