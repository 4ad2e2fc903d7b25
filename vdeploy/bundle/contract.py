"""deploy.json: reading, validating and writing the bundle contract (docs/bundle.md).

A bundle is read and validated once, on load: the JSON, its schema version, its digest, every field
(parse.py), every listed file (inside the folder, present, of the recorded SHA-256) and, when a
public key is given, its signature (signing.py). `Bundle.contract` is the typed result;
`Bundle.meta` keeps the raw object for code that still reads keys."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import BundleError
from ..fileio import atomic_write
from .parse import check_file_name, parse_contract
from .schema import SCHEMA_VERSION, Contract, check_sealed_header

DEPLOY_JSON = "deploy.json"
MAX_DEPLOY_JSON_BYTES = 64 << 20  # verification diagnostics included; far above any real one


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def compute_digest(meta: dict) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces) of every key but `digest` itself."""
    body = {k: v for k, v in meta.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Bundle:
    path: Path
    meta: dict[str, Any]
    # The typed view of `meta`, parsed once: by load_bundle for a bundle on disk, on first use for
    # one built in memory (an export in progress, a model spec run eagerly). `meta` must not be
    # changed after the first use; write a new deploy.json instead (update_deploy_json).
    _contract: Optional[Contract] = field(default=None, repr=False, compare=False)

    @property
    def contract(self) -> Contract:
        if self._contract is None:
            self._contract = parse_contract(self.meta, where=f"{self.path}/{DEPLOY_JSON}", sealed=False)
        return self._contract

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def formats(self) -> list[str]:
        return sorted({f["format"] for f in self.meta["files"].values() if f.get("role", "model") == "model"})

    @property
    def name(self) -> str:
        return self.path.name

    def model_file(self, fmt: str, precision: str = "fp32") -> Path:
        """The model file of a format that runs at `precision` (a file lists the precisions it
        serves: an fp32 OpenVINO IR also runs as bf16; an int8 model is a file of its own)."""
        for fname, info in self.meta["files"].items():
            if info["format"] == fmt and info.get("role", "model") == "model" and precision in file_precisions(info):
                return self.path / fname
        raise BundleError(f"{self.path}: has no {fmt} model for {precision} (has: {', '.join(f'{f} {p}' for f, p in self.runnable()) or 'none'})")

    def runnable(self) -> list[tuple[str, str]]:
        """(format, precision) of every model file."""
        return [(info["format"], p) for info in self.meta["files"].values() if info.get("role", "model") == "model"
                for p in file_precisions(info)]

    def input_names(self) -> list[str]:
        return [i["name"] for i in self.meta["inputs"]]

    def output_names(self) -> list[str]:
        return [o["name"] for o in self.meta["outputs"]]


def file_precisions(info: dict) -> list[str]:
    return list(info.get("precisions") or ["fp32"])


def _no_duplicate_keys(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            # the digest is computed over the parsed object: a second value would be sealed unseen
            raise BundleError(f"key {k!r} appears twice in one object")
        obj[k] = v
    return obj


def read_deploy_json(root: Path) -> dict:
    dj = root / DEPLOY_JSON
    try:
        if dj.is_symlink() or (dj.exists() and not dj.is_file()):
            raise BundleError(f"{dj}: must be a regular file inside the bundle")
        if dj.stat().st_size > MAX_DEPLOY_JSON_BYTES:
            raise BundleError(f"{dj}: {dj.stat().st_size} bytes, more than {MAX_DEPLOY_JSON_BYTES}; not a deploy.json")
        text = dj.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"{root}: no {DEPLOY_JSON}; not a bundle (or an export that did not finish)") from None
    except UnicodeDecodeError as e:
        raise BundleError(f"{dj}: not valid JSON ({e})") from None
    except OSError as e:
        raise BundleError(f"{dj}: cannot read it ({e.strerror or e})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise BundleError(f"{dj}: not valid JSON ({e})") from None
    except BundleError as e:
        raise BundleError(f"{dj}: {e}") from None
    except RecursionError:
        raise BundleError(f"{dj}: nested too deeply to be a deploy.json") from None


def check_files(root: Path, contract: Contract, *, check_hashes: bool = True) -> None:
    """Every listed file: inside the folder (no link leads out), a regular file, of its SHA-256."""
    real_root = root.resolve()
    for fname, info in contract.files.items():
        fp = root / fname
        try:
            real = fp.resolve(strict=True)
        except FileNotFoundError:
            raise BundleError(f"{root}: {fname} is listed in {DEPLOY_JSON} but missing") from None
        except (OSError, RuntimeError) as e:  # a link loop
            raise BundleError(f"{fp}: cannot be resolved ({e})") from None
        if not real.is_relative_to(real_root):
            raise BundleError(f"{fp}: leads outside the bundle (to {real}); a bundle's files live in its folder")
        if not real.is_file():
            raise BundleError(f"{fp}: is not a regular file")
        if check_hashes and sha256_file(real) != info.sha256:
            raise BundleError(f"{fp}: SHA-256 differs from {DEPLOY_JSON}: the file was truncated or changed")


def load_bundle(path: str | os.PathLike, *, check_hashes: bool = True, public_key=None,
                require_signature: bool = False) -> Bundle:
    """Open a bundle folder; refuse one that is partial, edited, invalid, or of another schema.

    `public_key` (a PEM file path, PEM bytes or an Ed25519 public key): the bundle must carry a
    valid signature by that key (deploy.sig, see signing.py). `require_signature` without a key is
    refused: a signature checked against a key the bundle itself brings proves nothing."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle folder")
    dj = root / DEPLOY_JSON
    meta = read_deploy_json(root)
    if not isinstance(meta, dict):
        raise BundleError(f"{dj}: expected a JSON object")
    check_sealed_header(meta, str(dj))
    # the digest first: a hand edit is named as such, before whatever value it broke
    if meta["digest"] != compute_digest(meta):
        raise BundleError(f"{dj}: was edited after export (its digest does not match its content); re-export or re-verify")
    contract = parse_contract(meta, where=str(dj), sealed=True)
    if require_signature and public_key is None:
        raise BundleError(f"{root}: a signature is required but no public key was given to check it against")
    # a signature covers the files only through their hashes: check them whenever it is checked
    check_files(root, contract, check_hashes=check_hashes or public_key is not None)
    bundle = Bundle(root, meta, contract)
    if public_key is not None:
        from .signing import verify_signature

        verify_signature(bundle, public_key)
    return bundle


def write_deploy_json(root: str | os.PathLike, meta: dict[str, Any]) -> Bundle:
    """Hash every listed file, seal the metadata with its digest, validate it as load_bundle will,
    write it atomically."""
    root = Path(root)
    meta = dict(meta, schema_version=SCHEMA_VERSION)
    for fname, info in meta["files"].items():
        check_file_name(fname, f"files key {fname!r}", str(root / DEPLOY_JSON))
        info["sha256"] = sha256_file(root / fname)
    meta["digest"] = compute_digest(meta)
    # what cannot be read back is never written
    contract = parse_contract(meta, where=str(root / DEPLOY_JSON), sealed=True)
    atomic_write(root / DEPLOY_JSON, json.dumps(meta, indent=1) + "\n")
    return Bundle(root, meta, contract)


def update_deploy_json(bundle: Bundle, **changes: Any) -> Bundle:
    """Rewrite deploy.json with some top-level keys changed (e.g. verification results). A
    signature (deploy.sig) no longer matches afterwards: sign the bundle again."""
    meta = dict(bundle.meta, **changes)
    return write_deploy_json(bundle.path, meta)
