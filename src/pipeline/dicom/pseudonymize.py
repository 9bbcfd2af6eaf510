"""Pseudonymous study ids: a keyed hash of the StudyInstanceUID."""

from __future__ import annotations

import hashlib
import hmac

STUDY_ID_HEX_CHARS = 32
"""Length of a study id in lowercase hex characters (128 bits of HMAC-SHA256)."""


def pseudonymize_uid(uid: str, key: str | bytes) -> str:
    """Return the pseudonymous id of ``uid``: HMAC-SHA256 under ``key``, 32 lowercase hex characters.

    The same (uid, key) always gives the same id; without the key the id cannot be traced back
    to the UID. Trailing NUL or space padding of the UID (as DICOM stores it) is ignored.

    Args:
        uid: a DICOM UID, e.g. the StudyInstanceUID.
        key: the secret pseudonymisation key (``Settings.pseudonym_key``).

    Raises:
        ValueError: when ``uid`` or ``key`` is empty.
    """
    clean = uid.strip("\x00 ")
    if not clean:
        raise ValueError("cannot pseudonymize an empty UID")
    key_bytes = key.encode("utf-8") if isinstance(key, str) else key
    if not key_bytes:
        raise ValueError("the pseudonymisation key must not be empty")
    digest = hmac.new(key_bytes, clean.encode("ascii", errors="replace"), hashlib.sha256).hexdigest()
    return digest[:STUDY_ID_HEX_CHARS]
