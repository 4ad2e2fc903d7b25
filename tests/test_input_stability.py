"""The float32 model's own stability under +-1 grey level of input noise, reported when a reduced
precision fails: a model that does not keep its gates under imperceptible noise cannot keep them in
bf16 or int8, and the note says so; a stable one is told the loss is the reduced precision's."""
import numpy as np
import pytest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def classifier(module_tmp):
    from vdeploy.eval.synthetic import make_imagefolder
    from vdeploy.export.spec import in_memory_bundle
    from vdeploy.export.torch_backend import TorchEagerBackend
    from vdeploy.frameworks import build_model
    from vdeploy.models.tiny import default_weights
    from vdeploy.runtime.io import read_image

    if not default_weights("shapes_cls").is_file():
        pytest.skip("no trained weights for tiny:shapes_cls")
    dm = build_model("tiny:shapes_cls")
    bundle = in_memory_bundle(dm, dm.input_size)
    folder = make_imagefolder(module_tmp.mktemp("images"), per_class=3)
    images = [read_image(p) for p in sorted(folder.rglob("*.png"))]
    return bundle, TorchEagerBackend(bundle, deployable=dm).load(), images


class _InputHash:
    """A 'model' whose top-1 is a hash of every input value: any change of the input changes it."""
    def __init__(self, classes: int):
        self.classes = classes

    def infer(self, inputs):
        x = next(iter(inputs.values()))
        logits = np.zeros((1, self.classes), np.float32)
        logits[0, hash(x.tobytes()) % self.classes] = 20.0
        return {"logits": logits}


def _refs(reference, bundle, images):
    from vdeploy.runtime.postprocess import postprocess
    from vdeploy.runtime.preprocess import preprocess

    preps = [preprocess(im, bundle.meta, bundle.meta.get("input_size")) for im in images]
    return [postprocess(reference.infer(p.inputs), p.meta, bundle.meta) for p in preps]


def test_a_trained_classifier_keeps_its_gates_under_one_grey_level(classifier):
    from vdeploy.export.input_stability import input_stability, stability_note
    from vdeploy.runtime.tasks import get_task

    bundle, torch_backend, images = classifier
    task = get_task("classification")
    m = input_stability(torch_backend, task, bundle.meta, images, _refs(torch_backend, bundle, images))
    assert m["top1_agreement"] == 1.0 and m["prob_abs"] < 0.05
    note = stability_note(m, task.resolve_gates(precision="int8"))
    assert "stable under such noise, so the loss is the reduced precision's" in note


def test_a_model_whose_outputs_follow_noise_is_named_as_such(classifier):
    from vdeploy.export.input_stability import input_stability, stability_note
    from vdeploy.runtime.tasks import get_task

    bundle, _, images = classifier
    task = get_task("classification")
    unstable = _InputHash(len(bundle.meta["classes"]))
    m = input_stability(unstable, task, bundle.meta, images, _refs(unstable, bundle, images))
    assert m["top1_agreement"] < 0.9
    note = stability_note(m, task.resolve_gates(precision="int8"))
    assert "misses top1_agreement >= 0.99" in note and "no bf16 or int8 file can be expected to meet them" in note
