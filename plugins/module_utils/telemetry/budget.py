"""How much a VM may write to a log: at most LINES lines per WINDOW
seconds, what is held back counted by kind and summed up once the window is
over. The resolver's log and the event log keep one per VM. Pure."""


class LogBudget(object):
    """At most LINES log lines per WINDOW seconds (for one VM); what is held
    back is counted by kind, and ``summary(now)`` gives the counts once the
    window it began in is over (one line, then a new window)."""

    __slots__ = ("lines", "window", "started", "used", "held")

    def __init__(self, lines=20, window=60.0):
        self.lines, self.window = lines, window
        self.started, self.used, self.held = None, 0, {}

    def allow(self, kind, now):
        if self.started is None or now - self.started >= self.window:
            if self.held:           # the summary is due first: keep counting until it is taken
                self.held[kind] = self.held.get(kind, 0) + 1
                return False
            self.started, self.used = now, 0
        if self.used < self.lines:
            self.used += 1
            return True
        self.held[kind] = self.held.get(kind, 0) + 1
        return False

    def summary(self, now):
        """{kind: lines held back} when the window is over and something
        was held back (then the next window starts), else None."""
        if not self.held or self.started is None or now - self.started < self.window:
            return None
        held, self.held = self.held, {}
        self.started, self.used = now, 0
        return held


def summary_text(held):
    """'1200 refused, 34 malformed' of a LogBudget summary."""
    return ", ".join("%d %s" % (count, kind) for kind, count in sorted(held.items(), key=lambda kv: (-kv[1], kv[0])))
