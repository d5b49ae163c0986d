"""Where tarballs come from, and what their names mean.

:mod:`~ztfcat.sources.names` is the one parser of release names and nights;
:mod:`~ztfcat.sources.tarballs` the one place that reads a location (a path or ``gs://``) as a
:class:`~ztfcat.sources.tarballs.Source`; :mod:`~ztfcat.sources.http` the archive over HTTP (listing,
``MD5SUMS``, resumable streamed downloads); :mod:`~ztfcat.sources.gcs` Google Cloud Storage.  Nothing
is imported here.
"""
