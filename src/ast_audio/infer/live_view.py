"""The terminal view of a live stream (`ast-audio listen --format live`): redrawn in place on a terminal, one plain
line per hop otherwise. Reads `ast_audio.infer.live.LiveHop` results; no torch."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

BAR = 24  # characters of a full score bar
SPARK = " ▁▂▃▄▅▆▇█"  # a frame model's column scores: 0 .. 1 in eighths


class LiveView:
    """The compact terminal view: redrawn in place on a terminal, one plain line per hop otherwise."""

    def __init__(self, top_k: int, keep: Sequence[int], tty: bool, out: TextIO = sys.stdout) -> None:
        self.top_k, self.keep, self.tty, self.out = top_k, keep, tty, out
        self.recent: list[str] = []  # the last closed events, newest first

    def show(self, hop: Any) -> None:
        for e in hop.closed:
            self.recent.insert(0, f"{e.label} {e.onset_s:.2f}-{e.offset_s:.2f} s ({e.score:.2f})")
        del self.recent[5:]
        top = hop.top(self.top_k, self.keep)
        if not self.tty:
            parts = [f"{hop.end_s:8.2f} s"] + [f"{label} {score:.2f}" for label, score in top]
            parts += [f"+{e.label} @{e.onset_s:.2f}" for e in hop.opened]
            parts += [f"-{e.label} {e.onset_s:.2f}-{e.offset_s:.2f}" for e in hop.closed]
            if hop.skipped:
                parts.append(f"skipped {hop.skipped}")
            self.out.write("  ".join(parts) + "\n")
        else:
            width = max((len(label) for label, _ in top), default=0)
            lines = [f"ast-audio listen   {hop.end_s:8.2f} s   window {hop.end_s - hop.start_s:.2f} s   "
                     f"compute {hop.compute_s * 1000:.0f} ms   skipped {hop.skipped}", ""]
            lines += [f"  {label:<{width}} {'█' * round(score * BAR):<{BAR}} {score:.2f}{self.columns(hop, label)}"
                      for label, score in top]
            lines += ["", "  open:   " + (", ".join(hop.active) or "-"),
                      "  recent: " + ("; ".join(self.recent) or "-")]
            self.out.write("\x1b[H\x1b[J" + "\n".join(lines) + "\n")
        self.out.flush()

    @staticmethod
    def columns(hop: Any, label: str) -> str:
        """A frame model's hop: the class's score in each of the hop's columns, one character each; else ''."""
        if hop.frames is None:
            return ""
        scores = hop.frames[:, hop.labels.index(label)]
        return "  " + "".join(SPARK[round(float(v) * (len(SPARK) - 1))] for v in scores)
