"""Signed bundles: an Ed25519 signature over deploy.json's digest, kept in `deploy.sig`.

deploy.json's digest covers every other key of deploy.json, and with them every listed file's
SHA-256, so one signature over it seals the whole bundle. The digest alone is unkeyed: anyone who
replaces a model file can recompute the hashes and the digest (re-seal) and the bundle still
loads. A signature cannot be recomputed without the private key, so a bundle checked against the
publisher's public key refuses a replaced model.

`deploy.sig` is not listed in deploy.json's `files` (it signs them; listing it would change what
it signs). Signing uses `cryptography` (Ed25519, offline, one small maintained dependency); keys are
PEM files: PKCS#8 private key (mode 0600), SubjectPublicKeyInfo public key.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..errors import BundleError, UserError
from ..fileio import atomic_write

SIGNATURE_FILE = "deploy.sig"
ALGORITHM = "ed25519"
# Domain separation: this key signing a digest means "this bundle", never anything else.
_CONTEXT = b"vdeploy bundle signature v1\n"
MAX_KEY_BYTES = 64 << 10
MAX_SIG_BYTES = 64 << 10


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise UserError("signed bundles need the `cryptography` package: pip install 'vdeploy[runtime]'") from None
    return serialization, ed25519


def _message(digest: str) -> bytes:
    return _CONTEXT + digest.encode("ascii")


def _read_key_file(path: str | os.PathLike, what: str) -> bytes:
    p = Path(path)
    try:
        if not p.is_file():
            raise UserError(f"{p}: no such {what} file")
        if p.stat().st_size > MAX_KEY_BYTES:
            raise UserError(f"{p}: too large to be a {what}")
        return p.read_bytes()
    except OSError as e:
        raise UserError(f"{p}: cannot read the {what} ({e.strerror or e})") from None


def load_public_key(key: Any):
    """An Ed25519 public key from a PEM file path, PEM bytes, or a key object."""
    serialization, ed25519 = _crypto()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    data, where = (key, "public key") if isinstance(key, bytes) else (_read_key_file(key, "public key"), str(key))
    try:
        pub = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        hint = " (that is a private key: give the .pub.pem)" if b"PRIVATE KEY" in data else ""
        raise UserError(f"{where}: not a PEM public key{hint} ({str(e).splitlines()[0][:120] if str(e) else 'unreadable'})") from None
    if not isinstance(pub, ed25519.Ed25519PublicKey):
        raise UserError(f"{where}: not an Ed25519 public key ({type(pub).__name__})")
    return pub


def load_private_key(path: str | os.PathLike):
    serialization, ed25519 = _crypto()
    data = _read_key_file(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise UserError(f"{path}: the private key is encrypted; vdeploy signs with unencrypted keys kept at mode 0600") from None
    except ValueError as e:
        raise UserError(f"{path}: not a PEM private key ({str(e).splitlines()[0][:120] if str(e) else 'unreadable'})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UserError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def key_id(public_key) -> str:
    """A short name for a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_path(private_path: str | os.PathLike) -> Path:
    """PRIVATE.pem -> PRIVATE.pub.pem (beside it)."""
    p = Path(private_path)
    return p.with_name((p.name[:-4] if p.name.endswith(".pem") else p.name) + ".pub.pem")


def generate_key_pair(private_path: str | os.PathLike) -> tuple[Path, Path, str]:
    """Write a new Ed25519 key pair: PRIVATE (mode 0600, never overwritten) and PRIVATE.pub.pem.
    Returns (private path, public path, key id)."""
    serialization, ed25519 = _crypto()
    priv_path, pub_path = Path(private_path), public_key_path(private_path)
    for p in (priv_path, pub_path):
        if p.exists() or p.is_symlink():
            raise UserError(f"{p}: exists; refusing to overwrite a key (remove it or choose another name)")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    priv_path.parent.mkdir(parents=True, exist_ok=True)
    # created 0600 (O_EXCL: never through a link, never over a file that appeared meanwhile)
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(priv_path, 0o600)  # whatever the umask
    atomic_write(pub_path, pub_pem)
    return priv_path, pub_path, key_id(key.public_key())


def sign_bundle(bundle_path: str | os.PathLike, private_key_path: str | os.PathLike) -> tuple[Path, str]:
    """Check the bundle (digest and every file hash), then write its signature. Returns
    (deploy.sig path, key id)."""
    from .contract import load_bundle

    bundle = load_bundle(bundle_path)  # never sign what does not load
    key = load_private_key(private_key_path)
    digest = bundle.meta["digest"]
    sig = key.sign(_message(digest))
    record = {"format": "vdeploy-bundle-signature", "version": 1, "algorithm": ALGORITHM,
              "signed": "deploy.json digest", "digest": digest, "key_id": key_id(key.public_key()),
              "signature": base64.b64encode(sig).decode("ascii")}
    out = bundle.path / SIGNATURE_FILE
    atomic_write(out, json.dumps(record, indent=1) + "\n")
    return out, record["key_id"]


def _read_signature(bundle) -> dict:
    p = Path(bundle.path) / SIGNATURE_FILE
    try:
        if p.is_symlink() or not p.is_file():
            raise BundleError(f"{bundle.path}: is not signed (no {SIGNATURE_FILE}); sign it with `vdeploy sign`")
        if p.stat().st_size > MAX_SIG_BYTES:
            raise BundleError(f"{p}: too large to be a signature")
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BundleError(f"{p}: unreadable signature ({type(e).__name__})") from None
    if not (isinstance(rec, dict) and rec.get("algorithm") == ALGORITHM and isinstance(rec.get("digest"), str)
            and isinstance(rec.get("signature"), str)):
        raise BundleError(f"{p}: not a vdeploy {ALGORITHM} signature")
    return rec


def verify_signature(bundle, public_key) -> str:
    """Refuse the bundle unless deploy.sig is a valid signature of its deploy.json digest by
    `public_key`. The bundle must come from load_bundle (digest and file hashes checked). Returns
    the key id."""
    _crypto()
    from cryptography.exceptions import InvalidSignature

    pub = load_public_key(public_key)
    rec = _read_signature(bundle)
    sig_path = Path(bundle.path) / SIGNATURE_FILE
    digest = bundle.meta["digest"]
    if rec["digest"] != digest:
        raise BundleError(f"{sig_path}: signs another deploy.json (digest {rec['digest'][:12]}..., this one "
                          f"{digest[:12]}...): the bundle changed after signing (re-sealed, re-verified or "
                          f"replaced); sign it again if the change is yours")
    try:
        sig = base64.b64decode(rec["signature"], validate=True)
    except ValueError:
        raise BundleError(f"{sig_path}: the signature is not base64") from None
    try:
        pub.verify(sig, _message(digest))
    except InvalidSignature:
        theirs = rec.get("key_id") if isinstance(rec.get("key_id"), str) else "?"
        mine = key_id(pub)
        why = (f"signed by key {theirs[:16]}, not by the trusted key {mine}" if theirs != mine
               else "the signature does not verify (forged or altered)")
        raise BundleError(f"{sig_path}: {why}; refusing the bundle") from None
    return key_id(pub)


def check_signature(bundle, public_key_path):
    """Load `bundle` (a folder or a Bundle) and require a valid signature by the public key at
    `public_key_path`; returns the loaded Bundle, to be run as it was checked. For `serve
    --require-signature` and any caller that must not run an unsigned or re-sealed bundle."""
    from .contract import Bundle, load_bundle

    if not public_key_path:
        raise UserError("a signature is required but no public key was given (--public-key PUBLIC.pem)")
    path = bundle.path if isinstance(bundle, Bundle) else bundle
    return load_bundle(path, public_key=public_key_path, require_signature=True)
