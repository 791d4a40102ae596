"""The key file: JSON at ``~/.gearshift/keys.json`` (``gateway.auth.keys_file``), mode 0600.

It holds records (id, tenant, classes, limits, salted hash), never a plaintext key. Writes go
to a temporary file in the same directory and are renamed over the old one, so a reader sees
the old file or the new one, never half of one. ``ReloadingKeyStore`` is the gateway's view:
it re-reads the file when it changes (looked at most once per ``interval_s``), so a revocation
takes effect on a running gateway within about a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.config import AuthConfig
from scheduler.errors import ConfigError
from scheduler.tenants.keys import ApiKey, IssuedKey, issue_key, new_key_id, parse_key
from scheduler.types import TrafficClass

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def keys_path(auth: AuthConfig) -> Path:
    """The key file ``auth`` names, ``~`` expanded."""
    return Path(auth.keys_file).expanduser()


def default_keys_path() -> Path:
    return keys_path(AuthConfig())


@dataclass(frozen=True, slots=True)
class KeyStore:
    """Every key by id (revoked ones included: ``ls`` shows them)."""

    keys: Mapping[str, ApiKey] = field(default_factory=dict)

    def lookup(self, presented: str) -> tuple[ApiKey, str] | None:
        """The live record a well-formed key names, and its secret (unverified)."""
        parsed = parse_key(presented)
        if parsed is None:
            return None
        record = self.keys.get(parsed[0])
        if record is None or record.revoked:
            return None
        return record, parsed[1]


class KeyFile:
    """Reads and writes the key file at ``path``. A missing file is an empty store."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> KeyStore:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return KeyStore()
        except OSError as exc:
            raise ConfigError(f"cannot read the key file {self.path}: {exc.strerror}") from None
        return _decode(text, self.path)

    def save(self, store: KeyStore) -> None:
        """Atomically replace the file (mode 0600; its directory is created 0700)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        document = {
            "version": FORMAT_VERSION,
            "keys": [_encode(record) for record in store.keys.values()],
        }
        fd, temporary = tempfile.mkstemp(prefix=".keys-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(document, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def create(
        self,
        *,
        tenant: str,
        classes: frozenset[TrafficClass],
        default_class: TrafficClass,
        rpm: int | None,
        tpm: int | None,
        now: datetime | None = None,
    ) -> IssuedKey:
        """Issue a key, store its record, and return the plaintext (the only time it exists)."""
        store = self.load()
        key_id = new_key_id()
        while key_id in store.keys:
            key_id = new_key_id()
        issued = issue_key(
            key_id=key_id,
            tenant=tenant,
            classes=classes,
            default_class=default_class,
            rpm=rpm,
            tpm=tpm,
            created_at=now or datetime.now(UTC),
        )
        self.save(KeyStore({**store.keys, key_id: issued.record}))
        return issued

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (idempotent); ``KeyError`` when there is no such id."""
        store = self.load()
        record = store.keys[key_id].revoke()
        self.save(KeyStore({**store.keys, key_id: record}))
        return record


class ReloadingKeyStore:
    """The gateway's view of the key file, re-read when its mtime, size or inode changes.

    ``clock`` is monotonic seconds. A vanished file means no valid keys (fail closed); a file
    that does not parse keeps the last good store and logs an error.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float], interval_s: float = 1.0) -> None:
        self._file = KeyFile(path)
        self._clock = clock
        self._interval_s = interval_s
        self._checked: float | None = None
        self._signature: tuple[int, int, int] | None = None
        self._store = KeyStore()
        self._verified: dict[str, bytes] = {}
        self._refresh()

    def authenticate(self, presented: str) -> ApiKey | None:
        """The live key ``presented`` is, or None (malformed, unknown, revoked or wrong)."""
        self._maybe_refresh()
        found = self._store.lookup(presented)
        if found is None:
            return None
        record, secret = found
        fingerprint = hashlib.sha256(record.salt + secret.encode()).digest()
        cached = self._verified.get(record.key_id)
        if cached is not None:
            return record if hmac.compare_digest(cached, fingerprint) else None
        if not record.verify(secret):
            return None
        self._verified[record.key_id] = fingerprint
        return record

    def live_key(self, key_id: str) -> ApiKey | None:
        """The record with this id unless it is unknown or revoked (no secret checked: for the
        gateway's own batch dispatcher, which names the key a batch was made with)."""
        self._maybe_refresh()
        record = self._store.keys.get(key_id)
        return None if record is None or record.revoked else record

    def _maybe_refresh(self) -> None:
        now = self._clock()
        if self._checked is not None and now - self._checked < self._interval_s:
            return
        self._checked = now
        self._refresh()

    def _refresh(self) -> None:
        try:
            stat = self._file.path.stat()
        except FileNotFoundError:
            if self._signature is not None or self._store.keys:
                log.warning("key file %s is gone: every key is refused", self._file.path)
            self._signature, self._store, self._verified = None, KeyStore(), {}
            return
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature == self._signature:
            return
        try:
            store = self._file.load()
        except ConfigError as exc:
            log.error("%s; keeping the keys read before", exc)
            return
        self._signature, self._store, self._verified = signature, store, {}
        log.info("key file %s loaded: %d keys", self._file.path, len(store.keys))


def _encode(record: ApiKey) -> dict[str, Any]:
    return {
        "id": record.key_id,
        "tenant": record.tenant,
        "classes": sorted(record.classes, key=list(TrafficClass).index),
        "default_class": record.default_class.value,
        "rpm": record.rpm,
        "tpm": record.tpm,
        "created_at": record.created_at.isoformat(),
        "revoked": record.revoked,
        "hash": {
            "scheme": "pbkdf2-sha256",
            "iterations": record.iterations,
            "salt": record.salt.hex(),
            "digest": record.digest.hex(),
        },
    }


def _decode(text: str, path: Path) -> KeyStore:
    try:
        document = json.loads(text)
        if document.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported version {document.get('version')!r}")
        records = [_record(item) for item in document["keys"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"the key file {path} is malformed: {exc}") from None
    return KeyStore({record.key_id: record for record in records})


def _record(item: dict[str, Any]) -> ApiKey:
    hashed = item["hash"]
    if hashed["scheme"] != "pbkdf2-sha256":
        raise ValueError(f"unknown hash scheme {hashed['scheme']!r}")
    classes = frozenset(TrafficClass(name) for name in item["classes"])
    default_class = TrafficClass(item["default_class"])
    if default_class not in classes:
        raise ValueError(f"key {item['id']}: default class {default_class} is not allowed")
    return ApiKey(
        key_id=str(item["id"]),
        tenant=str(item["tenant"]),
        classes=classes,
        default_class=default_class,
        rpm=_limit(item["rpm"]),
        tpm=_limit(item["tpm"]),
        created_at=datetime.fromisoformat(item["created_at"]),
        revoked=bool(item["revoked"]),
        salt=bytes.fromhex(hashed["salt"]),
        digest=bytes.fromhex(hashed["digest"]),
        iterations=int(hashed["iterations"]),
    )


def _limit(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"a limit must be a positive integer or null, not {value!r}")
    return value
