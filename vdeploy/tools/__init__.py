"""Developer tools behind the `vdeploy flops`, `plot-logs` and `convert-weights` commands."""
