import hashlib
import hmac

import pytest

from shared.bundle import sign, verify

DATA = b"\x00siq bundle bytes\xff" * 10


def test_sign_is_hex_hmac_sha256():
    expected = hmac.new(b"k3y", DATA, hashlib.sha256).hexdigest()
    assert sign(DATA, "k3y") == expected
    assert len(sign(DATA, "k3y")) == 64


def test_verify_accepts_own_signature_case_insensitively():
    sig = sign(DATA, "secret")
    assert verify(DATA, "secret", sig)
    assert verify(DATA, "secret", sig.upper())


@pytest.mark.parametrize(
    "data,key,sig",
    [
        (DATA + b"x", "secret", sign(DATA, "secret")),  # bytes changed
        (DATA, "other", sign(DATA, "secret")),  # wrong key
        (DATA, "secret", None),  # missing
        (DATA, "secret", ""),  # empty
        (DATA, "secret", "zz"),  # malformed
        (DATA, "secret", "é" * 64),  # non-ASCII
        (DATA, "", sign(DATA, "secret")),  # no key: nothing verifies
    ],
)
def test_verify_refuses(data, key, sig):
    assert verify(data, key, sig) is False


def test_sign_refuses_empty_key():
    with pytest.raises(ValueError):
        sign(DATA, "")
