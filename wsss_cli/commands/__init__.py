"""One module per `wsss` sub-command.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Add a command by writing a module and listing it in
``COMMANDS``.
"""

from __future__ import annotations

from wsss_cli.commands import pipeline, review

COMMANDS = (pipeline.Demo, pipeline.Run, review.Review)
