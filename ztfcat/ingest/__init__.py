"""Tarballs into the catalog: the tar stream, Avro framing and decoding, bulk upserts, light-curve history."""
