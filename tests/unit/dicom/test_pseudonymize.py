from __future__ import annotations

import re

import pytest

from pipeline.dicom import pseudonymize_uid

UID = "1.2.826.0.1.3680043.8.498.12345678901234567890"


def test_is_32_lowercase_hex_and_deterministic() -> None:
    first = pseudonymize_uid(UID, "key-a")
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert pseudonymize_uid(UID, "key-a") == first


def test_depends_on_key_and_uid() -> None:
    assert pseudonymize_uid(UID, "key-a") != pseudonymize_uid(UID, "key-b")
    assert pseudonymize_uid(UID, "key-a") != pseudonymize_uid(UID + "1", "key-a")
    assert pseudonymize_uid(UID, "key-a") != UID


def test_known_value_pins_the_algorithm() -> None:
    # HMAC-SHA256("k", "1.2.3") truncated to 32 hex characters
    import hashlib
    import hmac

    expected = hmac.new(b"k", b"1.2.3", hashlib.sha256).hexdigest()[:32]
    assert pseudonymize_uid("1.2.3", "k") == expected
    assert pseudonymize_uid("1.2.3", b"k") == expected


def test_dicom_padding_is_ignored() -> None:
    assert pseudonymize_uid("1.2.3\x00", "k") == pseudonymize_uid("1.2.3", "k")


@pytest.mark.parametrize(("uid", "key"), [("", "k"), ("1.2.3", "")])
def test_empty_inputs_raise(uid: str, key: str) -> None:
    with pytest.raises(ValueError):
        pseudonymize_uid(uid, key)
