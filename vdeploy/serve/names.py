"""Model names: the only user-chosen text that reaches a route, so it is checked strictly."""
from __future__ import annotations

import re

from ..errors import UserError

# Letters, digits, '_', '-', '.', not starting with '.', so no name is a path or a traversal.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def is_valid_model_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name)) and ".." not in name


def check_model_name(name: str) -> str:
    if not is_valid_model_name(name):
        raise UserError(f"invalid model name {name!r}: use up to 64 letters, digits, '_', '-' or '.' "
                        "(not starting with '.', no '..')")
    return name
