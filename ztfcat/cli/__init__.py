"""The ``ztfcat`` command: a thin layer of click commands over the library, one module per command group."""
