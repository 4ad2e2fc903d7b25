"""vdeploy publish: weights only, bit-identical, container kept, name carries the content hash."""
import hashlib
import pickle
import re

import numpy as np
import torch

from vdeploy.cli import main
from vdeploy.tools.publish import publish_checkpoint


def _trained_checkpoint(path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    sd = model.state_dict()
    torch.save({"model": sd, "optimizer": opt.state_dict(), "scheduler": {"last_epoch": 2}, "iteration": 5}, path)
    return sd


def _check_name(path, stem, suffix):
    assert re.fullmatch(rf"{stem}-[0-9a-f]{{8}}\{suffix}", path.name), path.name
    assert path.name[len(stem) + 1:len(stem) + 9] == hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def test_publish_cli_keeps_only_the_weights(tmp_path, capsys):
    sd = _trained_checkpoint(tmp_path / "ck.pth")
    assert main(["publish", str(tmp_path / "ck.pth"), str(tmp_path / "out/pub.pth")]) == 0
    printed = capsys.readouterr().out.strip()
    pub = tmp_path / "out" / printed.rsplit("/", 1)[-1]
    assert printed == str(pub) and pub.is_file() and not (tmp_path / "out/pub.pth").exists()
    _check_name(pub, "pub", ".pth")
    obj = torch.load(pub, weights_only=True)
    assert set(obj) == {"model"} and set(obj["model"]) == set(sd)
    for k, v in sd.items():
        assert obj["model"][k].dtype == v.dtype and torch.equal(obj["model"][k], v), k
    assert obj["model"]["1.num_batches_tracked"].dtype == torch.int64
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_publish_is_reproducible_and_keeps_mmseg_meta(tmp_path):
    sd = {"decode_head.conv_seg.weight": torch.randn(2, 8, 1, 1)}
    meta = {"dataset_meta": {"classes": ["road", "sky"]}}
    torch.save({"state_dict": sd, "meta": meta, "optimizer": {"x": torch.ones(1)}, "message_hub": {}}, tmp_path / "m.pth")
    first = publish_checkpoint(tmp_path / "m.pth", tmp_path / "seg.pth")
    second = publish_checkpoint(tmp_path / "m.pth", tmp_path / "seg.pth")
    assert first == second
    obj = torch.load(first, weights_only=True)
    assert set(obj) == {"state_dict", "meta"} and obj["meta"] == meta
    assert torch.equal(obj["state_dict"]["decode_head.conv_seg.weight"], sd["decode_head.conv_seg.weight"])


def test_publish_safetensors_and_pkl_input(tmp_path):
    from safetensors.torch import load_file

    arrays = {"backbone.w": np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)}
    (tmp_path / "zoo.pkl").write_bytes(pickle.dumps({"model": arrays, "__author__": "zoo"}, protocol=2))
    st = publish_checkpoint(tmp_path / "zoo.pkl", tmp_path / "pub.pth", safetensors=True)
    _check_name(st, "pub", ".safetensors")
    np.testing.assert_array_equal(load_file(str(st))["backbone.w"].numpy(), arrays["backbone.w"])
    pth = publish_checkpoint(tmp_path / "zoo.pkl", tmp_path / "pub.pth")
    assert torch.load(pth, weights_only=True)["__author__"] == "zoo"


def test_publish_refuses_a_payload_and_writes_nothing(tmp_path):
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"model": {"w": torch.zeros(1)}, "x": Payload()}, tmp_path / "evil.pth")
    assert main(["publish", str(tmp_path / "evil.pth"), str(tmp_path / "pub.pth")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pth"]
