"""The three image stamps of an alert: 63x63 gzip'd FITS of float32 noise, of real size and
compressibility."""

from __future__ import annotations

import gzip

import numpy as np

PUBLISHER = "ZTF (www.ztf.caltech.edu)"
CUTOUT_SIZE = 63
#: JD of 2017-01-01T00:00 UTC: ZTF's night id (``nid``) counts days from it.
_NID_EPOCH_JD = 2457754.5
_UNIX_EPOCH_JD = 2440587.5
_PRV_WINDOW_DAYS = 30.0
_BAND = {1: "g", 2: "r", 3: "i"}


# --------------------------------------------------------------------------------------------------------
# Cutouts
# --------------------------------------------------------------------------------------------------------


def _fits_bytes(image: np.ndarray) -> bytes:
    """A 63×63 float32 FITS image with ZTF's own six-card header.

    Written by hand because ZTF's ``SIMPLE  =  T`` card is not in FITS fixed format (astropy emits a
    ``VerifyWarning`` on real cutouts); readers must meet the same quirk here as on real data.
    """
    ny, nx = image.shape
    cards = [
        "SIMPLE  =  T",
        "BITPIX  =                  -32",
        "NAXIS   =                    2",
        f"NAXIS1  = {nx:>20d}",
        f"NAXIS2  = {ny:>20d}",
        "BUNIT   = 'DN      '",
        "END",
    ]
    header = "".join(c.ljust(80) for c in cards).encode("ascii")
    header += b" " * (-len(header) % 2880)
    data = image.astype(">f4").tobytes()
    data += b"\x00" * (-len(data) % 2880)
    return header + data


def _stamp(
    rng: np.random.Generator, sky: float, sigma: float, flux: float, fwhm: float, nan_frac: float = 0.0
) -> np.ndarray:
    n = CUTOUT_SIZE
    y, x = np.mgrid[0:n, 0:n]
    c = (n - 1) / 2 + rng.normal(0.0, 0.5, 2)
    s2 = (fwhm / 2.3548) ** 2
    source = flux / (2 * np.pi * s2) * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2) / (2 * s2))
    img = (sky + source + rng.normal(0.0, sigma, (n, n))).astype(np.float32)
    if nan_frac > 0:
        # templates lose an edge strip where the reference image ends
        width = max(1, int(n * nan_frac))
        edge = rng.integers(4)
        if edge == 0:
            img[:width, :] = np.nan
        elif edge == 1:
            img[-width:, :] = np.nan
        elif edge == 2:
            img[:, :width] = np.nan
        else:
            img[:, -width:] = np.nan
    return img


def cutout_triple(rng: np.random.Generator) -> tuple[bytes, bytes, bytes]:
    sky = float(rng.uniform(150.0, 400.0))
    sigma = float(rng.uniform(8.0, 14.0))
    fwhm = float(rng.uniform(1.6, 3.5))
    flux = float(rng.uniform(2e3, 6e4))
    ref_flux = flux * float(rng.uniform(0.1, 0.7))  # the source brightened: a positive difference
    sci = _stamp(rng, sky, sigma, flux, fwhm)
    nan_frac = float(rng.uniform(0.05, 0.3)) if rng.random() < 0.2 else 0.0
    ref = _stamp(rng, float(rng.uniform(150.0, 400.0)), sigma / 4, ref_flux, fwhm, nan_frac)
    diff = _stamp(rng, 0.0, sigma * 1.3, flux - ref_flux, fwhm)
    # fixed mtime: the same image gives the same bytes, as a reproducible night needs
    return tuple(gzip.compress(_fits_bytes(im), 9, mtime=1_600_000_000) for im in (sci, ref, diff))  # type: ignore[return-value]


def cutout_pool(rng: np.random.Generator, n: int = 64) -> list[tuple[bytes, bytes, bytes]]:
    """Make ``n`` (science, template, difference) cutout triples to share among many alerts.

    Each entry holds gzip'd 63×63 float32 FITS images: a Gaussian source on sky noise, a template that
    sometimes has a NaN edge strip, and a difference image.  Noise in float32 compresses as poorly as
    real cutouts do (about 20 KB of FITS to 12–15 KB of gzip), which gives synthetic tarballs real size
    and real compression ratio; making them costs a few milliseconds each, hence the pool.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n : int
        Number of triples.

    Returns
    -------
    list of tuple of bytes
        ``n`` triples ``(science, template, difference)`` of gzip bytes, as ZTF's ``stampData``.
    """
    return [cutout_triple(rng) for _ in range(n)]
