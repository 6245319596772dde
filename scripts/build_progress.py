#!/usr/bin/env python3
"""Show a long compile as progress instead of a silent wait: ``pip install -v ... 2>&1 | build_progress.py LOG``.

Reads a verbose pip build from stdin, keeps every line in LOG, and shows what matters on the terminal:
ninja's ``[k/N]`` steps as "compiled k of N files, elapsed, about how long is left" (one updating line on a terminal,
a line every 10% otherwise), pip's own one-line messages (Collecting, Building wheel, Successfully ...) and errors.
When the build fails, the last lines of LOG are printed, so the cause is on screen. Exits with 0: the exit status
that counts is pip's (``set -o pipefail`` in scripts/setup.sh).
"""
from __future__ import annotations

import re
import sys
import time

STEP = re.compile(r"^\s*\[(\d+)/(\d+)\]\s")
SHOW = re.compile(r"^(Collecting|Building wheel|Successfully|Created wheel|Installing collected|ERROR|error:)")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def main() -> int:
    log_path = sys.argv[1] if len(sys.argv) > 1 else "build.log"
    label = sys.argv[2] if len(sys.argv) > 2 else "compiling"
    tty = sys.stderr.isatty()
    start = time.time()
    last_shown = -1
    tail: list[str] = []
    with open(log_path, "w") as log:
        for raw in sys.stdin:
            log.write(raw)
            log.flush()
            line = raw.rstrip("\n")
            tail = (tail + [line])[-40:]
            match = STEP.match(line)
            if match:
                done, total = int(match.group(1)), int(match.group(2))
                elapsed = time.time() - start
                left = elapsed / done * (total - done) if done else 0.0
                text = f"setup: {label}: compiled {done}/{total} files, {_clock(elapsed)} elapsed, " \
                       f"about {_clock(left)} left"
                decile = done * 10 // max(total, 1)
                if tty:
                    sys.stderr.write("\r" + text.ljust(100))
                    sys.stderr.flush()
                elif decile != last_shown or done == total:
                    print(text, file=sys.stderr, flush=True)
                last_shown = decile
                continue
            if SHOW.match(line.strip()):
                if tty and last_shown >= 0:
                    sys.stderr.write("\n")
                    last_shown = -1
                print(line.strip(), file=sys.stderr, flush=True)
    if tty and last_shown >= 0:
        sys.stderr.write("\n")
    if any(("error" in t.lower() or "failed" in t.lower()) for t in tail[-10:]):
        print(f"setup: last lines of {log_path}:", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
