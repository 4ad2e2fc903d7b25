"""--save-vis drawings for every task: what is drawn lands on the picture."""
import numpy as np

from vdeploy.runtime.prediction import Prediction
from vdeploy.runtime.vis import draw


def test_detections_with_masks_are_drawn_inside_their_boxes():
    img = np.zeros((60, 80, 3), np.uint8)
    masks = np.zeros((1, 60, 80), bool)
    masks[0, 20:40, 30:50] = True
    p = Prediction("instance_segmentation", (60, 80), boxes=np.array([[30, 20, 50, 40]], np.float32),
                   scores=np.array([0.9], np.float32), classes=np.array([0]), masks=masks)
    out = draw(img, p, ["thing"])
    assert out[30, 40].any() and not out[5, 5].any()


def test_label_map_classification_and_embedding_pictures():
    img = np.full((32, 16, 3), 128, np.uint8)
    lm = np.zeros((32, 16), np.int32)
    lm[16:] = 1
    seg = draw(img, Prediction("semantic_segmentation", (32, 16), label_map=lm), ["a", "b"])
    assert seg.shape == img.shape and not np.array_equal(seg[0, 0], seg[31, 0])
    cls = draw(img, Prediction("classification", (32, 16), probs=np.array([0.1, 0.9], np.float32)), ["a", "b"])
    assert cls.shape == img.shape and not np.array_equal(cls, img)
    emb = draw(img, Prediction("embedding", (32, 16), features=np.linspace(-1, 1, 64).astype(np.float32)), [])
    assert emb.shape[0] > img.shape[0] and emb.shape[1] >= img.shape[1]  # enlarged crop plus a strip of bars
