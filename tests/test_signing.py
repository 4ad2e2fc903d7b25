"""Signed bundles (vdeploy/bundle/signing.py): a replaced model with a re-sealed deploy.json
loads on the unkeyed digest alone, and is refused wherever a signature is required."""
import os
import shutil
import stat
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli
from test_bundle_contract import det_bundle, reseal  # noqa: F401  (the fixture, and tamper.py's re-seal)
from vdeploy.bundle import load_bundle
from vdeploy.bundle.signing import SIGNATURE_FILE, check_signature, generate_key_pair, sign_bundle
from vdeploy.errors import BundleError, UserError


@pytest.fixture
def keys(tmp_path):
    r = run_cli("sign", "--new-key", tmp_path / "keys" / "publisher.pem")
    assert r.returncode == 0, r.stderr
    generate_key_pair(tmp_path / "keys" / "attacker.pem")
    return tmp_path / "keys"


@pytest.fixture
def signed(det_bundle, tmp_path, keys):
    d = tmp_path / "signed"
    shutil.copytree(det_bundle.path, d)
    r = run_cli("sign", d, "--key", keys / "publisher.pem")
    assert r.returncode == 0 and "signed with key" in r.stdout, r.stderr
    return d


def _replace_model(d):
    """Another model in the same place: every weight of the first initializer doubled, then the
    file hashes and digest recomputed exactly as tamper.py does."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(d / "model.onnx"))
    init = next(i for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) > 1)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 2, init.name))
    onnx.save(m, str(d / "model.onnx"))
    reseal(d)


def test_key_pair_private_key_is_0600_and_never_overwritten(keys):
    assert stat.S_IMODE(os.stat(keys / "publisher.pem").st_mode) == 0o600
    assert (keys / "publisher.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(UserError, match="exists; refusing to overwrite"):
        generate_key_pair(keys / "publisher.pem")
    r = run_cli("sign", "--new-key", keys / "publisher.pem")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_sign_and_verify_round_trip(signed, keys):
    b = load_bundle(signed, public_key=keys / "publisher.pub.pem")
    assert b.contract.task == "instance_segmentation"
    assert check_signature(signed, keys / "publisher.pub.pem").meta["digest"] == b.meta["digest"]
    assert load_bundle(signed, public_key=(keys / "publisher.pub.pem").read_bytes(), require_signature=True)
    # deploy.sig is not one of the sealed files: the unkeyed integrity check is unchanged
    assert SIGNATURE_FILE not in b.meta["files"] and load_bundle(signed).meta == b.meta
    r = run_cli("sign", signed, "--verify", keys / "publisher.pub.pem")
    assert r.returncode == 0 and "signature valid" in r.stdout, r.stderr


def test_replaced_model_resealed_is_refused_where_a_signature_is_required(signed, keys):
    _replace_model(signed)
    load_bundle(signed)  # the digest alone is unkeyed: the re-sealed bundle passes it
    with pytest.raises(BundleError, match="changed after signing"):
        load_bundle(signed, public_key=keys / "publisher.pub.pem")
    with pytest.raises(BundleError, match="no public key"):
        load_bundle(signed, require_signature=True)
    r = run_cli("sign", signed, "--verify", keys / "publisher.pub.pem")
    assert r.returncode == 2 and "changed after signing" in r.stderr and "Traceback" not in r.stderr


def test_resigned_by_another_key_or_forged_is_refused(signed, keys):
    _replace_model(signed)
    sign_bundle(signed, keys / "attacker.pem")  # the attacker signs the replaced model
    with pytest.raises(BundleError, match="not by the trusted key"):
        load_bundle(signed, public_key=keys / "publisher.pub.pem")
    assert load_bundle(signed, public_key=keys / "attacker.pub.pem")  # it is a valid signature, by them
    # a signature file copied over with the key id of the publisher: the bytes still do not verify
    import json

    rec = json.loads((signed / SIGNATURE_FILE).read_text())
    pub_id = run_cli("sign", signed, "--verify", keys / "attacker.pub.pem").stdout.split()[-1]
    assert pub_id == rec["key_id"]
    from vdeploy.bundle.signing import key_id, load_public_key

    rec["key_id"] = key_id(load_public_key(keys / "publisher.pub.pem"))
    (signed / SIGNATURE_FILE).write_text(json.dumps(rec))
    with pytest.raises(BundleError, match="does not verify"):
        load_bundle(signed, public_key=keys / "publisher.pub.pem")


def test_unsigned_bundle_and_bad_keys(det_bundle, keys):
    with pytest.raises(BundleError, match="is not signed"):
        load_bundle(det_bundle.path, public_key=keys / "publisher.pub.pem")
    with pytest.raises(UserError, match="that is a private key"):
        load_bundle(det_bundle.path, public_key=keys / "publisher.pem")
    with pytest.raises(UserError, match="no such public key"):
        load_bundle(det_bundle.path, public_key=keys / "missing.pub.pem")


def test_serve_refuses_before_serving(signed, keys, tmp_path):
    """serve --public-key / --require-signature: exit 2 with one line, before binding a port."""
    _replace_model(signed)

    def serve(*extra):
        return subprocess.run([sys.executable, "-m", "vdeploy", "serve", str(signed), "--port", "1", *map(str, extra)],
                              capture_output=True, text=True, cwd=ROOT, timeout=120,
                              env={k: v for k, v in os.environ.items() if k != "VDEPLOY_PUBLIC_KEY"})

    for extra in (["--public-key", keys / "publisher.pub.pem"], ["--require-signature"]):
        r = serve(*extra)
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "changed after signing" in serve("--public-key", keys / "publisher.pub.pem").stderr
