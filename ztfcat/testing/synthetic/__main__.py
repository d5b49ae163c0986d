"""``python -m ztfcat.testing.synthetic``: write a synthetic nightly tarball."""

from .night import main

raise SystemExit(main())
