# Run at every reset, soft ones included, before main.py (mpremote soft-resets the board for
# every command, and then main.py is not run). Once started, the watchdog cannot be stopped
# and survives a soft reset, so it is started here and fed from a timer: by the firmware's
# boot until it takes over (start.py), at the REPL for ten minutes after the last reset, so
# that maintenance (ecoin-provision status, refund, flash) is never cut off; a board left
# at the REPL then resets into its firmware. No config.json (not provisioned), or
# watchdog_ms 0: no watchdog.
def _boot():
    import json

    try:
        with open("config.json") as f:
            ms = json.load(f).get("watchdog_ms", 60000)
    except (OSError, ValueError):
        return
    if ms:
        import board

        board.maintenance(board.watchdog(ms))


_boot()
del _boot
