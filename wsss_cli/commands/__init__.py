"""One module per `wsss` sub-command.

Each module defines a class with ``NAME``, ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``. Add a command by writing a module and listing its
class in ``COMMANDS`` (the order of `wsss --help`).
"""

from __future__ import annotations

from wsss_cli.commands import (
    compare,
    config,
    export,
    ingest,
    pipeline,
    review,
    status,
    train,
    tune,
)

COMMANDS = (
    pipeline.Demo,
    ingest.Ingest,
    train.Train,
    pipeline.Run,
    pipeline.Label,
    pipeline.Eval,
    compare.Compare,
    tune.Tune,
    status.Status,
    review.Review,
    export.Export,
    config.Config,
)
