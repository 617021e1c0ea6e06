"""Zarr stores at an address (HTTP(S), S3-compatible storage), opened through fsspec.

A store on a web server or in a bucket is read like one on disk, chunk by chunk as the fusion
asks for tiles, so a large OME-Zarr never has to be downloaded first. The packages that speak
each protocol are optional; when one is missing, or the address cannot be reached, the user
gets one sentence saying what to install or check rather than an fsspec or aiohttp traceback.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import ReadError

#: The optional packages each protocol needs, and the extra that installs them.
_PACKAGES = {"http": "aiohttp", "https": "aiohttp", "s3": "s3fs", "gs": "gcsfs"}
REMOTE_EXTRA = 'pip install "napari-pdmfuse[remote]"'


def is_url(source: str | Path) -> bool:
    """Whether an input names an address (``scheme://…``) rather than a local path; a Path is
    always local (and a Windows drive letter is no scheme)."""
    if not isinstance(source, str) or "://" not in source:
        return False
    scheme = urlparse(source).scheme
    return len(scheme) > 1 and scheme != "file"


def url_name(url: str) -> str:
    """The last part of an address's path: ``http://host/a/b.ome.zarr/`` → ``b.ome.zarr``."""
    return urlparse(url).path.rstrip("/").rsplit("/", 1)[-1] or url


def _storage_options(url: str) -> dict[str, Any]:
    """Options for the address's file system: public buckets are read without credentials when
    none are configured (s3fs otherwise refuses before asking the server)."""
    if urlparse(url).scheme != "s3":
        return {}
    import botocore.session

    credentials = botocore.session.get_session().get_credentials()
    return {} if credentials is not None else {"anon": True}


def check_protocol(url: str) -> None:
    """Refuse an address whose protocol needs a package that is not installed."""
    scheme = urlparse(url).scheme.lower()
    package = _PACKAGES.get(scheme)
    if package is not None and importlib.util.find_spec(package) is None:
        raise ReadError(
            f"Reading {url} needs the {package} package; install the optional remote reading "
            f"with {REMOTE_EXTRA}."
        )
    import fsspec

    if scheme not in fsspec.available_protocols():
        raise ReadError(
            f"{url} uses the protocol {scheme}://, which pdmfuse cannot read; give an http(s):// "
            "or s3:// address, or a local path."
        )


def open_zarr(url: str) -> Any:
    """The zarr group or array at ``url``, opened read-only; a ReadError saying whether the
    address could not be reached or holds no zarr store."""
    import zarr

    check_protocol(url)
    try:
        return zarr.open(url, mode="r", storage_options=_storage_options(url))
    except (FileNotFoundError, KeyError, ValueError):
        # zarr's "node not found" errors are ValueErrors, a missing key a KeyError.
        raise ReadError(
            f"{url} holds no zarr store; check the address (it should name the .zarr folder)."
        ) from None
    except Exception as exc:
        raise unreachable(url, exc) from None


def unreachable(url: str, exc: BaseException | None = None) -> ReadError:
    why = f" ({type(exc).__name__})" if exc is not None else ""
    return ReadError(
        f"{url} cannot be reached{why}; check the address, the network and any credentials, "
        "then try again."
    )
