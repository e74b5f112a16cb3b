"""The one cache key: what names a response, whichever cache holds it.

A response is fully determined by the bytes of its source (the identity: location, mtime,
size, inode or object ETag), the canonical form of what was asked (the plan's canonical text,
or the canonical descriptor of a metadata answer, plus whatever of the request its headers
name, such as a IIIF id) and the settings that change output (the settings fingerprint).  The
hash of those three is the ETag, the key of the worker's response cache and the key under
which responses are shared through memcached.
"""

from __future__ import annotations

import hashlib

from ..model import SourceIdentity


def cache_key(identity: SourceIdentity, canonical: str, fingerprint: str) -> str:
    text = f"{identity.token}\0{canonical}\0{fingerprint}"
    # surrogatepass: a canonical form can keep client text verbatim (an ignored JTLS), and
    # input read with surrogateescape may hold any lone surrogate.
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def etag(key: str) -> str:
    """The strong ETag of a response with this key."""
    return f'"{key}"'
