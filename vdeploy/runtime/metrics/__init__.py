"""Metric families, one module each. Every function takes plain numpy/JSON data and returns
a flat dict of metric name -> value (fractions in [0, 1], None where undefined), so they can
be tested on hand-made inputs without a model, a dataset folder, or a backend."""
