"""Reference outputs of the real fast-reid for the project's conformance tests (run it beside the
project, in a scratch virtualenv with fast-reid's source on sys.path; never a project dependency).

    python make_fastreid_references.py FASTREID_SRC GOLDENS_DIR OUT_DIR CONFIG NAME

Grown from ../shared/reference/make_fastreid_goldens.py, with two changes:
- learnable GeM pooling (`GeneralizedMeanPoolingP`) gets fast-reid's own initial p = 3 instead of
  a stand-in value near 0: with p ~ 0.01 the pool raises means to the power 1/p ~ 100 and turns
  float32 rounding into percent-level feature changes, which no implementation could match, so
  the reference would not be a fair bar. The value goes to `bn_stats.npz` (the file of
  overrides that `../shared/acceptance/make_ckpt.py` applies after the stand-in weights);
- `outputs.npz` leaves the resized images out (they are re-made from GOLDENS_DIR/images/reid
  with the deployed preprocessing, which tests/test_fastreid.py checks against fast-reid's).
"""
import glob, hashlib, json, os, sys
import numpy as np
import torch
import cv2

src, goldens, out_dir, config, name = sys.argv[1:6]
sys.path.insert(0, goldens)
from weights import golden_state_dict  # noqa: E402
sys.path.insert(0, src)
from fastreid.config import get_cfg  # noqa: E402
from fastreid.modeling.meta_arch import build_model  # noqa: E402

cfg = get_cfg()
cfg.merge_from_file(os.path.join(src, "configs", config))
cfg.MODEL.BACKBONE.PRETRAIN = False
cfg.MODEL.DEVICE = "cpu"
model = build_model(cfg).eval()
manifest = [(k, list(v.shape)) for k, v in model.state_dict().items()]
sd = golden_state_dict(manifest)
h = hashlib.sha256()
for k, v in sd.items():
    h.update(k.encode()); h.update(v.tobytes())
overrides = {k: np.full_like(v, 3.0) for k, v in sd.items() if k.endswith("pool_layer.p")}
sd.update(overrides)
model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
case = os.path.join(out_dir, name)
os.makedirs(case, exist_ok=True)
with open(os.path.join(case, "manifest.json"), "w") as f:
    json.dump({"config": config, "weights_sha256": h.hexdigest(), "keys": manifest}, f, indent=0)

images = sorted(glob.glob(os.path.join(goldens, "images", "reid", "*.jpg")))
H, W = cfg.INPUT.SIZE_TEST
def prep(p):
    rgb = cv2.imread(p)[:, :, ::-1]
    return cv2.resize(rgb, (W, H), interpolation=cv2.INTER_CUBIC)
batch = np.stack([prep(p) for p in images])
x = torch.as_tensor(batch.astype("float32").transpose(0, 3, 1, 2))

names = {m: n for n, m in model.named_modules()}
stats, hooks = dict(overrides), []
def pre(mod, inp):
    t = inp[0]
    dims = (0, 2, 3) if t.dim() == 4 else (0,)
    mod.running_mean.copy_(t.mean(dim=dims)); mod.running_var.copy_(t.var(dim=dims))
    stats[names[mod] + ".running_mean"] = mod.running_mean.numpy().copy()
    stats[names[mod] + ".running_var"] = mod.running_var.numpy().copy()
for m in model.modules():
    if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
        hooks.append(m.register_forward_pre_hook(pre))
with torch.no_grad():
    model(x.clone())
for hk in hooks:
    hk.remove()
np.savez_compressed(os.path.join(case, "bn_stats.npz"), **stats)

feats = {}
model.backbone.register_forward_hook(lambda m, i, o: feats.__setitem__("backbone", o.detach()))
with torch.no_grad():
    out = model(x.clone())
np.savez_compressed(os.path.join(case, "outputs.npz"),
                    images=np.array([os.path.basename(p) for p in images]),
                    backbone_mean_c=feats["backbone"].mean(dim=(2, 3)).numpy(),
                    backbone_shape=np.array(feats["backbone"].shape), features=out.numpy())
print(name, "inputs", tuple(x.shape), "backbone", tuple(feats["backbone"].shape), "features", tuple(out.shape),
      "norms", np.round(out.norm(dim=1).numpy(), 2), "GeM p set:", sorted(overrides))
