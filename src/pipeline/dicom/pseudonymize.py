"""Pseudonymous ids: a keyed hash of the StudyInstanceUID (study id) or of the PatientID (patient key)."""

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


PATIENT_DOMAIN = "PatientID:"
"""Prefix hashed with a PatientID, so that a PatientID equal to some StudyInstanceUID gives another id."""


def pseudonymize_patient_id(patient_id: str, key: str | bytes) -> str:
    """Return the pseudonymous patient key of ``patient_id``: 32 hex characters of HMAC-SHA256 under ``key``.

    It groups a patient's studies (so a dataset can be split by patient) without identifying
    the patient. Padding is ignored as for UIDs.

    Raises:
        ValueError: when ``patient_id`` or ``key`` is empty.
    """
    clean = patient_id.strip("\x00 ")
    if not clean:
        raise ValueError("cannot pseudonymize an empty PatientID")
    return pseudonymize_uid(PATIENT_DOMAIN + clean, key)
