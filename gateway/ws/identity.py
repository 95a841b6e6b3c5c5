"""The server's long-term identity key (for the v2 `/ws` handshake): kept 0600 in the data folder."""

from __future__ import annotations

import os

from nacl.public import PrivateKey

from gateway.config.file import Paths
from gateway.ws.crypto import fingerprint

IDENTITY_FILE = "identity.key"


def load_identity(paths: Paths) -> PrivateKey:
    """Return the server's identity key, generating and saving it (owner-only) on first use."""
    path = paths.data_dir / IDENTITY_FILE
    if path.exists():
        raw = bytes.fromhex(path.read_text().strip())
        if len(raw) != 32:
            raise ValueError(f"{path} is not an identity key; delete it to have a new one generated")
        return PrivateKey(raw)
    key = PrivateKey.generate()
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(bytes(key).hex() + "\n")
    os.replace(tmp, path)
    return key


def identity_fingerprint(paths: Paths) -> str:
    """The fingerprint clients pin (`gw1:…`); creates the key when there is none yet."""
    return fingerprint(bytes(load_identity(paths).public_key))
