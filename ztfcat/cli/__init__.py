"""The ``ztfcat`` command: a thin layer of click commands over the library, one module per command group.

:mod:`~ztfcat.cli.root` is the group and the one list of its commands; each command is a module-level
function of :mod:`~ztfcat.cli.manage`, :mod:`~ztfcat.cli.query`, :mod:`~ztfcat.cli.archive`,
:mod:`~ztfcat.cli.explore`, :mod:`~ztfcat.cli.science`, :mod:`~ztfcat.cli.transfer` or
:mod:`~ztfcat.cli.web`; what they share is in :mod:`~ztfcat.cli.common` (options, the catalog),
:mod:`~ztfcat.cli.output` (tables, CSV, JSON), :mod:`~ztfcat.cli.progress` (bars) and
:mod:`~ztfcat.cli.fleet` (``--workers`` / ``--dask-scheduler``).  Nothing is
imported here, so ``import ztfcat.cli.output`` costs only that module.
"""
