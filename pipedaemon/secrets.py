"""Credentials encrypted at rest (AES-256-GCM) with a per-user key.

The key comes from ``PIPEDAEMON_KEY`` (urlsafe base64 of 32 bytes) or from the key
file ``$PIPEDAEMON_HOME/secret.key`` (0600), made on first use. Each sealed value
carries a key id, so a wrong key is reported clearly instead of decrypting into
garbage that would be sent to a server.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipedaemon_sdk.protocol import errors as E

from .log import register_secret

VERSION = b"\x01"
KEY_ID_LEN = 8


def _decode_key(text: str, source: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode() + b"==")
    except (ValueError, TypeError):
        key = b""
    if len(key) != 32:
        raise E.InvalidSettingsError(f"{source} is not a valid key (urlsafe base64 of 32 bytes)",
                                     {"source": source})
    return key


class Vault:
    def __init__(self, home: Path) -> None:
        self.home = home
        self._key: bytes | None = None
        self.source = ""

    def key(self) -> bytes:
        if self._key is None:
            self._key, self.source = self._load()
        return self._key

    def _load(self) -> tuple[bytes, str]:
        env = os.environ.get("PIPEDAEMON_KEY")
        if env:
            return _decode_key(env, "PIPEDAEMON_KEY"), "PIPEDAEMON_KEY"
        path = self.home / "secret.key"
        try:
            return _decode_key(path.read_text(), str(path)), str(path)
        except FileNotFoundError:
            pass
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = AESGCM.generate_key(bit_length=256)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(base64.urlsafe_b64encode(key).decode())
        return key, str(path)

    def key_id(self) -> bytes:
        return hashlib.sha256(b"pipedaemon-key-id" + self.key()).digest()[:KEY_ID_LEN]

    def seal(self, value: Any) -> bytes:
        nonce = os.urandom(12)
        plain = msgspec.json.encode(value)
        return VERSION + self.key_id() + nonce + AESGCM(self.key()).encrypt(nonce, plain, VERSION)

    def open(self, blob: bytes, what: str) -> Any:
        if not blob:
            return {}
        head = 1 + KEY_ID_LEN
        kid, nonce, sealed = blob[1:head], blob[head:head + 12], blob[head + 12:]
        key = self.key()  # loaded first: the message names where it came from
        wrong = E.InvalidSettingsError(
            f"cannot decrypt the credentials of {what}: the key in {self.source} is not the one "
            "they were encrypted with (restore the key file or PIPEDAEMON_KEY, or register them again)",
            {"remote": what, "reason": "wrong key"})
        if blob[:1] != VERSION or kid != self.key_id():
            raise wrong
        try:
            value = msgspec.json.decode(AESGCM(key).decrypt(nonce, sealed, VERSION))
        except InvalidTag:
            raise wrong from None
        for s in iter_secrets(value):
            register_secret(s)
        return value


def iter_secrets(value: Any) -> list[str]:
    """Every string inside a credentials structure (for log redaction and scans)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in iter_secrets(v)]
    if isinstance(value, list):
        return [s for v in value for s in iter_secrets(v)]
    return []


def mask(value: Any) -> Any:
    """Credentials as users may see them: every value replaced by ``***``."""
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    return "***"
