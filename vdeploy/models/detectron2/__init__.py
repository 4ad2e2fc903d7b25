"""Native re-implementations of detectron2's meta-architectures (no detectron2 needed).

Modules take explicit keyword arguments; `vdeploy.frameworks.detectron2.build` is the only
place that reads a detectron2 config. State-dict key names follow detectron2's, so its
checkpoints load unchanged.
"""
