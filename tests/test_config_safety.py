"""Config readers as an attacker would feed them: files outside the config's tree, devices, FIFOs,
YAML bombs, and MMSegmentation configs that import, reach attributes or allocate without bound.
Every refusal is one ConfigError that names the file (and line), prints nothing of the refused
file, and comes quickly: the probes run in a subprocess with a generous timeout, so a reader that
hangs or allocates without bound fails the test instead of the test run."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vdeploy.errors import CheckpointError, ConfigError
from vdeploy.frameworks.config_files import MAX_FILE_BYTES, ROOTS_ENV
from vdeploy.frameworks.detectron2.config import load_config, read_with_bases
from vdeploy.frameworks.mmseg.config import load_config as load_mmseg

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT.parent / "shared" / "zoo"
SECRET = "SECRET_MARKER_4f1c"
# Generous: a refusal takes milliseconds; this only turns a hang into a failure.
HANG_S = 120


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def run_vdeploy(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from vdeploy.cli import main; sys.exit(main())", *args], capture_output=True, text=True,
                          timeout=HANG_S, cwd=ROOT, env={**os.environ, **(env or {})})


@pytest.fixture
def tree(tmp_path):
    """A project with configs two levels down and a secret file outside its config tree."""
    write(tmp_path / "outside" / "secret.yaml", f"{SECRET}: 1\nMODEL:\n  {SECRET}_KEY: 2\n")
    write(tmp_path / "proj" / "configs" / "Base-X.yaml", "MODEL:\n  MASK_ON: true\n")
    return tmp_path


# --------------------------------------------------------------------------- YAML: where bases may be

def test_zoo_layout_bases_in_the_parent_tree_are_read(tree):
    cfg = write(tree / "proj" / "configs" / "COCO" / "x.yaml", "_BASE_: ../Base-X.yaml\n")
    assert read_with_bases(cfg) == {"MODEL": {"MASK_ON": True}}


@pytest.mark.parametrize("base", ["../../../outside/secret.yaml", "{tmp}/outside/secret.yaml"])
def test_base_outside_the_tree_is_refused_without_echo(tree, base):
    cfg = write(tree / "proj" / "configs" / "COCO" / "x.yaml", f"_BASE_: {base.format(tmp=tree)}\n")
    r = run_vdeploy("config", "show", str(cfg))
    assert r.returncode == 2, r.stderr
    assert "outside the config's tree" in r.stderr and ROOTS_ENV in r.stderr
    assert SECRET not in r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_allowed_root_admits_a_base(tree, monkeypatch):
    cfg = write(tree / "proj" / "configs" / "COCO" / "x.yaml", "_BASE_: ../../../outside/secret.yaml\n")
    with pytest.raises(ConfigError, match="outside"):
        read_with_bases(cfg)
    assert read_with_bases(cfg, roots=[tree / "outside"])[SECRET] == 1
    monkeypatch.setenv(ROOTS_ENV, str(tree / "outside"))
    assert read_with_bases(cfg)[SECRET] == 1


def test_symlink_out_of_the_tree_is_refused(tree):
    link = tree / "proj" / "configs" / "link.yaml"
    link.symlink_to(tree / "outside" / "secret.yaml")
    cfg = write(tree / "proj" / "configs" / "COCO" / "x.yaml", "_BASE_: ../link.yaml\n")
    with pytest.raises(ConfigError, match="outside the config's tree") as e:
        read_with_bases(cfg)
    assert SECRET not in str(e.value)


@pytest.mark.parametrize("base, why", [
    ("/etc/shadow", "not a config file"),
    ("/etc/passwd", "not a config file"),
    ("/dev/zero", "not a config file"),
    ("/proc/self/environ", "not a config file"),
    ("/dev/zero.yaml", "outside the config's tree"),
    ("/etc/hosts.yaml", "outside the config's tree"),
])
def test_system_files_and_devices_are_refused_quickly(tree, base, why):
    cfg = write(tree / "proj" / "configs" / "COCO" / "x.yaml", f"_BASE_: {base}\n")
    r = run_vdeploy("config", "show", str(cfg))
    assert r.returncode == 2 and why in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_fifo_and_folder_in_the_tree_are_refused_without_blocking(tree):
    configs = tree / "proj" / "configs"
    os.mkfifo(configs / "fifo.yaml")
    (configs / "folder.yaml").mkdir()
    for name in ("fifo.yaml", "folder.yaml"):
        cfg = write(configs / "COCO" / "x.yaml", f"_BASE_: ../{name}\n")
        r = run_vdeploy("config", "show", str(cfg))  # opening a FIFO would block forever
        assert r.returncode == 2 and "not a regular file" in r.stderr, r.stderr


def test_top_level_non_config_file_is_refused_by_config_show(tmp_path):
    r = run_vdeploy("config", "show", "/etc/passwd")
    assert r.returncode == 2 and "not a config file" in r.stderr
    assert "root:" not in r.stdout + r.stderr


def test_oversized_file_is_refused(tree):
    big = tree / "proj" / "configs" / "big.yaml"
    big.write_text("A: " + "x" * MAX_FILE_BYTES + "\n")
    with pytest.raises(ConfigError, match="larger than a config may be"):
        read_with_bases(big)


# --------------------------------------------------------------------------- YAML: bombs

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("text, why", [
    (BILLION_LAUGHS, "expands to more than"),
    ("a: &a [*a]\n", "refers to the node that contains it"),
    ("a: &a {b: *a}\n", "refers to the node that contains it"),
    ("a: " + "[" * 70 + "]" * 70 + "\n", "nested deeper than"),
    ("base: &b {x: 1}\n" + "".join(f"m{i}: &m{i} {{<<: [{', '.join(['*b'] + [f'*m{j}' for j in range(i)])}]}}\n"
                                   for i in range(30)), "expands to more than"),  # merge keys
])
def test_yaml_bombs_are_refused_in_a_subprocess(tmp_path, text, why):
    cfg = tmp_path / "configs" / "bomb.yaml"
    cfg.parent.mkdir()
    cfg.write_text(text)
    r = run_vdeploy("config", "show", str(cfg))
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr
    if why:
        assert r.returncode == 2 and why in r.stderr and f"{cfg}:" in r.stderr, r.stderr


def test_eval_tag_expression_growth_is_refused(tmp_path):
    # The one accepted code-like tag (detectron2's anchor sizes) computes plain arithmetic only,
    # within a budget: nested comprehensions cannot multiply the work.
    nested = "[" * 6 + "x" + "".join(f" for x in {list(range(50))}]" for _ in range(6))
    cfg = write(tmp_path / "c" / "x.yaml", f"""
        MODEL:
          ANCHOR_GENERATOR:
            SIZES: !!python/object/apply:eval ["{nested}"]
        """)
    with pytest.raises(ConfigError, match="could run code"):
        read_with_bases(cfg)
    cfg = write(tmp_path / "c" / "y.yaml", """
        MODEL:
          ANCHOR_GENERATOR:
            SIZES: !!python/object/apply:eval ["[[x, x * 2**(1.0/3)] for x in [32, 64]]"]
        """)
    assert read_with_bases(cfg)["MODEL"]["ANCHOR_GENERATOR"]["SIZES"] == [[32, 32 * 2 ** (1 / 3)],
                                                                         [64, 64 * 2 ** (1 / 3)]]


# --------------------------------------------------------------------------- YAML: messages

def test_warnings_name_keys_only(tmp_path, caplog):
    long_key = "SOLVER_" + "X" * 200
    cfg = write(tmp_path / "c" / "x.yaml", f"""
        "root:*:19000:0:99999:7:": 1
        "{SECRET} with spaces": 2
        {long_key}: 3
        """)
    with caplog.at_level(logging.WARNING, logger="vdeploy"):
        load_config(cfg)
    text = caplog.text
    assert "ignoring 3 config key(s)" in text
    assert "root:*" not in text and SECRET not in text and "X" * 100 not in text
    assert "<a key that is not a name>" in text and "SOLVER_XXX" in text


def test_errors_quote_values_cut_short(tmp_path):
    cfg = write(tmp_path / "c" / "x.yaml", f"MODEL:\n  MASK_ON: '{SECRET}{'y' * 5000}'\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert len(str(e.value)) < 400 and "y" * 100 not in str(e.value)


# --------------------------------------------------------------------------- mmseg: pure Python that configs use

def test_mmseg_pure_expressions_are_evaluated(tmp_path):
    path = write(tmp_path / "cfg" / "m.py", """
        '''A docstring.'''
        channels = [18, 36, 72, 144]
        num_classes = 3
        depths = [2, 2, 6, 2]
        model = dict(decode_head=dict(channels=sum(channels), in_index=tuple(range(len(channels)))),
                     loss=dict(class_weight=[1.0] * num_classes + [0.1]))
        keys = {'backbone': dict(lr_mult=1.0)}
        keys.update({f'stages.{i}.blocks.{j}.norm': dict(decay=0.0)
                     for i, n in enumerate(depths) for j in range(n) if j < 1})
        keys.update(extra=1)
        pipeline = [dict(type='Resize'), dict(dict(type='Depth', factor=1e-3))]
        scales = [int(512 * x * 0.1) for x in range(5, 8)]
        a, (b, c) = 1, [2, 3]
        a += 10
        big = max(channels) if min(channels) > 10 and 18 in channels else None
        name = f'{num_classes:03d}-{0.5:.2f}-{"x"!r}'
        pairs = dict(zip(['a', 'b'], [1, 2]))
        neg = -(2 ** 3) // 3 % 5
        sliced = channels[1:-1][::-1]
        len(channels)
        """)
    cfg = load_mmseg(path)
    assert cfg["model"] == {"decode_head": {"channels": 270, "in_index": (0, 1, 2, 3)},
                            "loss": {"class_weight": [1.0, 1.0, 1.0, 0.1]}}
    assert sorted(cfg["keys"]) == ["backbone", "extra"] + [f"stages.{i}.blocks.0.norm" for i in range(4)]
    assert cfg["pipeline"][1] == {"type": "Depth", "factor": 1e-3}
    assert cfg["scales"] == [256, 307, 358]
    assert (cfg["a"], cfg["b"], cfg["c"]) == (11, 2, 3)
    assert cfg["big"] == 144 and cfg["name"] == "003-0.50-'x'" and cfg["pairs"] == {"a": 1, "b": 2}
    assert cfg["neg"] == -(2 ** 3) // 3 % 5 and cfg["sliced"] == [72, 36]


def test_mmseg_update_mutates_like_python(tmp_path):
    # `.update()` changes the dict itself, so a dict that already holds it sees the change, as in Python.
    path = write(tmp_path / "cfg" / "m.py", """
        keys = dict(a=1)
        wrapper = dict(paramwise_cfg=dict(custom_keys=keys))
        keys.update(dict(b=2))
        """)
    assert load_mmseg(path)["wrapper"] == {"paramwise_cfg": {"custom_keys": {"a": 1, "b": 2}}}


# --------------------------------------------------------------------------- mmseg: refusals

MMSEG_PROBES = {
    # allocation without bound: refused before allocating
    "list_times_huge": ("x = [0] * 10**10\n", 1, "not allowed"),
    "str_doubling": ("s = 'ab'\n" + "s = s + s\n" * 34, None, "string longer than"),
    "list_nesting": ("l = [0]\n" + "l = [l, l]\n" * 40, None, "shared parts counted in full"),
    "huge_range": ("r = range(10**12)\n", 1, "range of more than"),
    "power_tower": ("x = 10**10**10\n", 1, "number larger than"),
    "repeated_squaring": ("x = 10**1000\n" + "x = x * x\n" * 30, None, "number larger than"),
    "str_times_huge": ("s = 'a' * 10**9\n", 1, "string longer than"),
    "format_width": ("x = f'{1:>999999999}'\n", 1, "format spec"),
    "nested_comprehension": ("x = [0 for a in range(100000) for b in range(100000)]\n", 1, "steps"),
    "filtered_comprehension": ("x = [0 for a in range(100000) for b in range(100000) if a < 0]\n", 1, "steps"),
    "compare_big": ("l = list(range(100000))\nx = [l == l[:] for _ in range(100000)]\n", 2, "steps"),
    "self_reference": ("d = dict()\nd.update(x=d)\n", 2, "contains itself"),
    "many_big_names": ("l = list(range(60000))\n" + "".join(f"a{i} = [l, l]\n" for i in range(200)),
                       None, "more than"),
    "deep_expression": ("x = " + "-" * 5000 + "1\n", None, ""),
    "deep_parens": ("x = " + "[" * 5000 + "]" * 5000 + "\n", None, ""),
    "long_sum": ("x = " + "1+" * 100000 + "1\n", None, ""),
    # code
    "import": ("import os\n", 1, "imports are not allowed"),
    "from_import": ("from mmseg.models import EncoderDecoder\n", 1, "imports are not allowed"),
    "dunder_import": ("x = __import__('os')\n", 1, "calling __import__() is not allowed"),
    "attribute": ("x = ().__class__.__bases__\n", 1, "attribute access"),
    "subclasses": ("x = [c for c in ().__class__.__base__.__subclasses__()]\n", 1, "not allowed"),
    "open": ("x = open('/etc/passwd').read()\n", 1, "not allowed"),
    "bare_call": ("print('hi')\n", 1, "calling print() is not allowed"),
    "method_on_str": ("x = '{}'.format(1)\n", 1, "not allowed"),
    "update_on_builtin": ("dict.update({}, a=1)\n", 1, "applies only to a dict"),
    "shadowed_builtin": ("sum = dict(a=1)\nx = sum([1])\n", 2, "not allowed"),
    "lambda": ("f = lambda: 1\n", 1, "lambdas"),
    "loop": ("for i in range(3):\n    x = i\n", 1, "For statement"),
    "walrus": ("x = (y := 1)\n", 1, "not allowed"),
    "subscript_store": ("d = dict()\nd['a'] = 1\n", 2, "only assignments to names"),
}


def test_mmseg_probes_are_refused_quickly_with_the_line(tmp_path):
    for name, (text, _, _) in MMSEG_PROBES.items():
        (tmp_path / f"{name}.py").write_text(text)
    script = textwrap.dedent("""
        import json, sys, time
        from vdeploy.errors import ConfigError
        from vdeploy.frameworks.mmseg.config import load_config
        out = {}
        for path in sys.argv[1:]:
            t = time.monotonic()
            try:
                load_config(path)
                out[path] = ["loaded", ""]
            except ConfigError as e:
                out[path] = ["ConfigError", str(e)]
            except BaseException as e:
                out[path] = [type(e).__name__, str(e)[:300]]
            out[path].append(time.monotonic() - t)
        print(json.dumps(out))
        """)
    paths = [str(tmp_path / f"{name}.py") for name in MMSEG_PROBES]
    r = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=HANG_S,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads(r.stdout)
    for name, (_, line, why) in MMSEG_PROBES.items():
        path = str(tmp_path / f"{name}.py")
        kind, message, _seconds = results[path]
        assert kind == "ConfigError", (name, kind, message)
        assert message.startswith(path) and why in message, (name, message)
        if line is not None:
            assert message.startswith(f"{path}:{line}:"), (name, message)
        assert "\n" not in message


def test_mmseg_code_never_runs(tmp_path):
    marker = tmp_path / "ran"
    for i, line in enumerate([
        f"__import__('os').system('touch {marker}')",
        f"x = open('{marker}', 'w')",
        f"x = [open('{marker}', 'w') for _ in range(1)]",
        f"x = dict(a=__import__('pathlib').Path('{marker}').touch())",
        f"x = 1 if __import__('os').system('touch {marker}') else 2",
    ]):
        path = write(tmp_path / f"c{i}.py", f"model = dict(decode_head=dict())\n{line}\n")
        with pytest.raises(ConfigError, match=f"{path}:2: refused"):
            load_mmseg(path)
    assert not marker.exists()


def test_mmseg_base_outside_the_tree_is_refused(tree):
    write(tree / "outside" / "secret.py", f"{SECRET} = 1\n")
    path = write(tree / "proj" / "configs" / "fcn" / "m.py", "_base_ = ['../../../outside/secret.py']\n")
    with pytest.raises(ConfigError, match="outside the config's tree") as e:
        load_mmseg(path)
    assert SECRET not in str(e.value)
    path = write(tree / "proj" / "configs" / "fcn" / "n.py", "_base_ = '/etc/passwd'\n")
    with pytest.raises(ConfigError, match="not a config file"):
        load_mmseg(path)
    assert load_mmseg(path.with_name("m.py"), roots=[tree / "outside"]) == {SECRET: 1}


# --------------------------------------------------------------------------- the zoos

def test_every_mmseg_zoo_config_loads():
    root = ZOO / "mmseg"
    if not root.is_dir():
        pytest.skip(f"no mmseg zoo at {root}")
    configs = sorted(p for p in root.rglob("*.py") if "_base_" not in p.parts)
    failed = {}
    for path in configs:
        try:
            cfg = load_mmseg(path)
        except ConfigError as e:  # anything else is a bug and fails the test with its traceback
            failed[path.name] = str(e)
            continue
        assert isinstance(cfg.get("model"), dict), path
    assert not failed, f"{len(failed)} of {len(configs)} refused, e.g. {next(iter(failed.values()))}"
    assert len(configs) >= 600


def test_mmseg_reader_agrees_with_python_on_every_zoo_file():
    """Each file of mmseg 1.2.2's zoo (bases included), evaluated by the reader and executed by
    Python: the same names with the same values. Only the zoo's own trusted files are executed."""
    from vdeploy.frameworks.config_files import ConfigScope
    from vdeploy.frameworks.mmseg.config import _evaluate_file, _Load

    root = ZOO / "mmseg"
    if not root.is_dir():
        pytest.skip(f"no mmseg zoo at {root}")
    files = sorted(root.rglob("*.py"))
    for path in files:
        env: dict = {"__builtins__": __builtins__}
        exec(compile(path.read_text(), str(path), "exec"), env)  # noqa: S102 - mmseg's own configs
        expected = {k: v for k, v in env.items() if not k.startswith("__")}
        assert _evaluate_file(str(path), _Load(ConfigScope(path, suffixes=(".py",)))) == expected, path
    assert len(files) >= 700


def test_every_yaml_zoo_config_reads_within_its_tree():
    if not ZOO.is_dir():
        pytest.skip(f"no zoo at {ZOO}")
    files = sorted(p for zoo in ("detectron2", "centermask2", "fastreid") for p in (ZOO / zoo).rglob("*.y*ml"))
    for path in files:
        assert isinstance(read_with_bases(path), dict), path
    assert len(files) > 100


# --------------------------------------------------------------------------- checkpoints

def test_unpickling_refusal_gives_safe_advice(tmp_path):
    torch = pytest.importorskip("torch")
    from vdeploy.frameworks.checkpoint import load_checkpoint

    path = tmp_path / "ns.pth"
    import argparse

    torch.save({"model": {"w": torch.zeros(2)}, "args": argparse.Namespace(a=1)}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert "refusing to unpickle argparse.Namespace" in message and "safetensors" in message
    assert "weights_only" not in message and "safe_globals" not in message and "\n" not in message
