"""The console that the commands print their tables and messages to.

On a terminal it is rich's own Console, fitted to the terminal's width. Anywhere else (a log file,
a pipe, CI) rich would assume 80 columns, cut the columns of a wide table to ``dim… fid… gen…``
(``benchmark --dry-run``) and break long lines; there it is ``LOG_WIDTH`` wide instead, so a table
takes the width its content needs and a line stays one line.
"""

from __future__ import annotations

from rich.console import Console, ConsoleDimensions

LOG_WIDTH = 1000  # wider than any table or line the commands print


class LogFriendlyConsole(Console):
    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(LOG_WIDTH, size.height)


console = LogFriendlyConsole()
