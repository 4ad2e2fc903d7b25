"""The bundle contract: deploy.json and the files it seals (docs/bundle.md). Knows no engine.

schema.py: the typed contract; parse.py: deploy.json validated into it; contract.py: reading, sealing and writing a bundle;
signing.py: Ed25519 signatures over the seal (deploy.sig)."""
from .contract import (DEPLOY_JSON, Bundle, compute_digest, load_bundle, sha256_file, update_deploy_json,
                       write_deploy_json)
from .parse import parse_contract
from .schema import (FORMAT_FILES, SCHEMA_VERSION, Contract, FileEntry, Keypoints, Normalize, Pad, Postprocess,
                     Preprocess, Provenance, Resize, TensorSpec, Verification)

__all__ = ["DEPLOY_JSON", "FORMAT_FILES", "SCHEMA_VERSION", "Bundle", "Contract", "FileEntry", "Keypoints",
           "Normalize", "Pad", "Postprocess", "Preprocess", "Provenance", "Resize", "TensorSpec", "Verification",
           "compute_digest", "load_bundle", "parse_contract", "sha256_file", "update_deploy_json",
           "write_deploy_json"]
