"""Where tarballs come from: the HTTP archive and Google Cloud Storage."""
