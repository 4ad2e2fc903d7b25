"""One suite every backend must pass. Exclusions state why."""
import numpy as np
import pytest

from vdeploy.runtime.backends import create_backend, entries
from vdeploy.runtime.predictor import Predictor
from vdeploy.runtime.synthetic import synthetic_image

# "torch" rebuilds the eager model from provenance: it is the reference the others are compared with.
EXPORTED = [e.name for e in entries() if e.format]


@pytest.mark.parametrize("backend", EXPORTED)
def test_backend_matches_pytorch_on_a_new_shape(small_classifier_bundle, backend):
    # exported from a 480x640 example, checked on a portrait image of another size
    img = synthetic_image(300, 200, seed=5)
    ref = Predictor(small_classifier_bundle, "torch").predict(img).probs
    got = Predictor(small_classifier_bundle, backend).predict(img).probs
    assert got.shape == (1000,)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("backend", EXPORTED)
def test_backend_rejects_wrong_input_rank(small_classifier_bundle, backend):
    from vdeploy.errors import UserError

    b = create_backend(backend, small_classifier_bundle)
    with pytest.raises(UserError, match="dims"):
        b.infer({"images": np.zeros((3, 64, 64), np.float32)})


@pytest.mark.parametrize("backend", EXPORTED)
def test_backend_takes_a_batch_when_the_bundle_is_batchable(small_classifier_bundle, backend):
    p = Predictor(small_classifier_bundle, backend)
    imgs = [synthetic_image(80, 90, seed=s) for s in range(3)]
    batched = p.predict_batch(imgs)
    single = [p.predict(im) for im in imgs]
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a.probs, b.probs, rtol=1e-4, atol=1e-6)


def test_unknown_backend_is_a_user_error(small_classifier_bundle):
    from vdeploy.errors import UserError

    with pytest.raises(UserError, match="unknown backend 'tensorflow'"):
        create_backend("tensorflow", small_classifier_bundle)
