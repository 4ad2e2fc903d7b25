"""`vdeploy config show CFG [--diff]` and `vdeploy config migrate CFG --to VERSION [--out FILE]`.

YAML configs are read as detectron2-style configs: with detectron2's defaults, or, when the file
has keys those lack, with the defaults of the detectron2-based frameworks vdeploy ships (fast-reid
replaces them, centermask2 adds to them). `--defaults` / `--extra-defaults` choose explicitly.
MMSegmentation `.py` configs are shown through the mmseg reader.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .common import add_config_override_arguments

NAME = "config"
HELP = "Show a framework config fully resolved (or only what differs from its defaults), or migrate it between detectron2 releases."

_FRAMEWORKS = Path(__file__).resolve().parent.parent / "frameworks"
# (name, how the file is layered: "base" replaces detectron2's defaults, "extra" adds to them, glob)
_COMPANION_DEFAULTS = (
    ("fast-reid", "base", "fastreid_defaults.yaml"),
    ("centermask2", "extra", "centermask2*defaults.yaml"),
    ("centermask2", "extra", "centermask2/defaults.yaml"),
)


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print the resolved config as YAML", description="Print the resolved config "
                          "(defaults, _BASE_ chain and file merged) as YAML.")
    show.add_argument("cfg", help="detectron2/centermask2/fast-reid YAML or MMSegmentation .py config")
    show.add_argument("--diff", action="store_true", help="print only the keys that differ from the defaults "
                      "(MMSegmentation: from what the file's _base_ files give)")
    add_config_override_arguments(show)
    _defaults_args(show)
    mig = sub.add_parser("migrate", help="rewrite a detectron2 config for another detectron2 release",
                         description="Rewrite a detectron2 config for another detectron2 release, reporting every "
                                     "dropped, renamed or added key.")
    mig.add_argument("cfg", help="detectron2 YAML config")
    mig.add_argument("--to", dest="to_version", required=True, help="target release, e.g. v0.6, v0.3, latest")
    mig.add_argument("--from", dest="from_version", default="latest",
                     help="release the config was written for (default latest); only matters going forward")
    mig.add_argument("--out", help="write the migrated YAML here (atomically) instead of stdout")
    _defaults_args(mig)


def _defaults_args(parser) -> None:
    parser.add_argument("--defaults", metavar="YAML", help="defaults that replace detectron2's (e.g. fast-reid's)")
    parser.add_argument("--extra-defaults", metavar="YAML", help="defaults added to detectron2's (e.g. centermask2's)")


def run(args) -> int:
    from ..frameworks.detectron2.config import config_to_yaml, diff_from_defaults, migrate_config
    from .common import parse_config_overrides

    path = Path(args.cfg)
    if path.suffix.lower() not in (".py", ".yaml", ".yml"):
        from ..errors import UserError

        # Whatever is read gets printed back (resolved): only files that are configs by their name.
        raise UserError(f"{path}: not a config file (expected a .yaml/.yml detectron2-style config or an "
                        "MMSegmentation .py config)")
    if path.suffix == ".py":
        from ..errors import UserError

        if args.action == "migrate":
            raise UserError(f"{path}: migrate rewrites detectron2 YAML configs; this is an MMSegmentation config")
        from ..frameworks.mmseg.config import load_bases
        from ..frameworks.overrides import apply_cfg_options

        cfg = apply_cfg_options(_load_mmseg(path), parse_config_overrides(args), str(path))
        if args.diff:
            cfg = diff_from_defaults(cfg, load_bases(path))
        print(_mmseg_yaml(cfg), end="")
        return 0
    cfg, defaults, note = load_yaml_config(path, args.defaults, args.extra_defaults)
    if args.action == "show":
        from ..frameworks.overrides import apply_opts

        cfg = apply_opts(cfg, parse_config_overrides(args), str(path))
    if note:
        print(f"# {note}", file=sys.stderr)
    if args.action == "show":
        print(config_to_yaml(diff_from_defaults(cfg, defaults) if args.diff else cfg), end="")
        return 0
    migrated, lines = migrate_config(cfg, args.to_version, from_version=args.from_version, defaults=defaults)
    for line in lines or [f"nothing to change for {args.to_version}"]:
        print(line, file=sys.stderr)
    text = f"# migrated by vdeploy config migrate --to {args.to_version}\n" + config_to_yaml(migrated)
    if args.out:
        from ..runtime.io import atomic_write
        atomic_write(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def load_yaml_config(path: Path, base_defaults=None, extra_defaults=None):
    """(config, the defaults it was merged into, a note naming the defaults picked automatically)."""
    from ..errors import ConfigError
    from ..frameworks.detectron2.config import load_config, load_defaults

    if base_defaults or extra_defaults:
        return (load_config(path, base_defaults=base_defaults, extra_defaults=extra_defaults),
                load_defaults(base_defaults, extra_defaults), "")
    try:
        return load_config(path), load_defaults(), ""
    except ConfigError as first:
        if "unknown config key" not in str(first):
            raise
        for name, layer, pattern in _COMPANION_DEFAULTS:
            for candidate in sorted(_FRAMEWORKS.glob(pattern)):
                kw = {"base_defaults": candidate} if layer == "base" else {"extra_defaults": candidate}
                try:
                    return load_config(path, **kw), load_defaults(**kw), f"read with {name}'s defaults"
                except ConfigError:
                    continue
        raise first


def _load_mmseg(path: Path) -> dict:
    from ..errors import UserError

    try:
        from ..frameworks.mmseg.config import load_config
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("vdeploy.frameworks.mmseg"):
            raise
        raise UserError(f"{path}: reading MMSegmentation .py configs needs vdeploy.frameworks.mmseg, "
                        "which this installation lacks") from None
    return load_config(path)


def _mmseg_yaml(cfg: dict) -> str:
    from ..frameworks.detectron2.config import config_to_yaml

    def plain(v):  # tuples are lists in YAML
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return config_to_yaml(plain(cfg))
