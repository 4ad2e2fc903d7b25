"""The bundle contract: deploy.json and the files it seals (docs/bundle.md). Knows no engine."""
from .contract import (DEPLOY_JSON, FORMAT_FILES, SCHEMA_VERSION, Bundle, load_bundle, sha256_file,
                       update_deploy_json, write_deploy_json)

__all__ = ["DEPLOY_JSON", "FORMAT_FILES", "SCHEMA_VERSION", "Bundle", "load_bundle", "sha256_file",
           "update_deploy_json", "write_deploy_json"]
