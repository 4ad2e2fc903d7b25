"""COCO's person keypoints: names (in the order of COCO's annotations and detectron2's heads),
the skeleton drawn between them, and the per-keypoint OKS sigmas of COCO's keypoint evaluation
(pycocotools' defaults, which detectron2 uses when TEST.KEYPOINT_OKS_SIGMAS is empty)."""
from __future__ import annotations

NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
         "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
         "right_knee", "left_ankle", "right_ankle")

# person_keypoints_*.json "skeleton", made 0-based
SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9),
            (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))

OKS_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
              0.087, 0.087, 0.089, 0.089)


def keypoint_meta(num_keypoints: int, oks_sigmas=()) -> dict:
    """The `keypoints` section of deploy.json: COCO's names, skeleton and sigmas for a 17-keypoint
    person model, else numbered keypoints, no skeleton, and the sigmas given (none: eval and
    verification use a uniform sigma, said in their notes)."""
    if num_keypoints == len(NAMES):
        return {"names": list(NAMES), "skeleton": [list(e) for e in SKELETON],
                "oks_sigmas": [float(s) for s in (oks_sigmas or OKS_SIGMAS)]}
    return {"names": [f"keypoint_{i}" for i in range(num_keypoints)], "skeleton": [],
            "oks_sigmas": [float(s) for s in oks_sigmas]}
