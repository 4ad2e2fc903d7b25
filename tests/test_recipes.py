"""Every `vdeploy` command line in docs/recipes.md parses against the real command-line parser,
so the recipes never drift from the commands (the behaviour behind each has its own tests)."""
import shlex
from pathlib import Path

import pytest

from vdeploy.cli import build_parser

RECIPES = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"


def _command_lines():
    lines, in_block, current = [], False, ""
    for raw in RECIPES.read_text().splitlines():
        if raw.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        if raw.lstrip().startswith("#"):
            continue
        current += raw.split(" #")[0].rstrip().rstrip("\\") + " "  # without its trailing comment
        if not raw.rstrip().endswith("\\"):
            if current.strip().startswith("vdeploy "):
                lines.append(current.strip())
            current = ""
    return lines


@pytest.mark.parametrize("line", _command_lines())
def test_recipe_command_parses(line):
    argv = shlex.split(line)[1:]
    build_parser().parse_args(argv)


def test_recipes_have_commands():
    assert len(_command_lines()) >= 20
