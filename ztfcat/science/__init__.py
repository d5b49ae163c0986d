"""Science queries over the catalog: cross-match a list, follow up a sky map, objects at a glance.

Each lives in its own module (:mod:`.crossmatch`, :mod:`.skymap`, :mod:`.objects`) and is reached through
:class:`ztfcat.Catalog` (``crossmatch``, ``skymap_search``, ``objects``) or the ``ztfcat xmatch``,
``ztfcat skymap`` and ``ztfcat objects`` commands.  Nothing is imported here, so ``import ztfcat`` stays
light; the optional dependencies (``pip install 'ztfcat[science]'``) load only when a query needs them.
"""
