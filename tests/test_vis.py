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
    # the overlay, then a legend of the classes present on the right
    assert seg.shape[0] >= img.shape[0] and seg.shape[1] > img.shape[1] and not np.array_equal(seg[0, 0], seg[31, 0])
    assert (seg[:, img.shape[1]:] < 255).any()
    cls = draw(img, Prediction("classification", (32, 16), probs=np.array([0.1, 0.9], np.float32)), ["a", "b"])
    assert cls.shape == img.shape and not np.array_equal(cls, img)
    emb = draw(img, Prediction("embedding", (32, 16), features=np.linspace(-1, 1, 64).astype(np.float32)), [])
    assert emb.shape[0] > img.shape[0] and emb.shape[1] >= img.shape[1]  # enlarged crop plus a strip of bars


def _two_dets(scores):
    return Prediction("detection", (120, 160), boxes=np.array([[10, 30, 60, 80], [12, 31, 62, 82]], np.float32),
                      scores=np.array(scores, np.float32), classes=np.array([0, 1]))


def test_detections_below_the_score_threshold_are_not_drawn():
    img = np.zeros((120, 160, 3), np.uint8)
    assert np.array_equal(draw(img, _two_dets([0.2, 0.1]), ["a", "b"], score_threshold=0.5), img)
    assert not np.array_equal(draw(img, _two_dets([0.2, 0.1]), ["a", "b"], score_threshold=0.15), img)


def test_tags_of_overlapping_detections_do_not_cover_each_other():
    import cv2

    from vdeploy.runtime.vis import label

    img = np.zeros((120, 160, 3), np.uint8)
    taken = []
    label(img, "person 0.99", 10, 30, (0, 200, 0), taken)
    label(img, "person 0.98", 12, 31, (0, 0, 200), taken)
    (a, b) = taken
    assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    assert cv2.countNonZero(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)) > 0
