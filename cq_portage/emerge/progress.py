"""Each package's state while cq-emerge waits: one block redrawn in place on a terminal, a
line per change otherwise (logs, cron), nothing with --quiet."""

from __future__ import annotations

import shutil
import sys
from typing import TextIO

_COLOURS = {"installed": "32", "built": "32", "binary": "36", "building": "33",
            "queued": "34", "installing": "33", "failed": "31", "skipped": "31"}


class Progress:
    def __init__(self, stream: TextIO = sys.stdout, mode: str = "auto", colour: bool = False):
        if mode == "auto":
            mode = "tty" if stream.isatty() else "lines"
        self.stream, self.mode, self.colour = stream, mode, colour
        self.states: dict[str, tuple[str, str]] = {}
        self._drawn = 0

    def set(self, name: str, state: str, detail: str = "") -> None:
        if self.states.get(name) == (state, detail):
            return
        self.states[name] = (state, detail)
        if self.mode == "lines":
            self.stream.write(f"cq-emerge: {name}: {state}{' ' + detail if detail else ''}\n")
            self.stream.flush()
        elif self.mode == "tty":
            self._redraw()

    def _line(self, name: str, state: str, detail: str) -> str:
        label = f"{state:<10}"
        if self.colour and state in _COLOURS:
            label = f"\033[{_COLOURS[state]}m{label}\033[0m"
        return f"[{label}] {name}{' ' + detail if detail else ''}"

    def _redraw(self) -> None:
        # Cursor-up cannot reach lines scrolled off the top: keep the block within the window.
        room = max(3, shutil.get_terminal_size().lines - 1)
        lines = [self._line(n, s, d) for n, (s, d) in self.states.items()]
        hidden = len(lines) - room
        if hidden > 0:
            lines = [f"... and {hidden + 1} more above"] + lines[hidden + 1:]
        out = [f"\033[{self._drawn}F"] if self._drawn else []
        out += [line + "\033[K\n" for line in lines]
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)
