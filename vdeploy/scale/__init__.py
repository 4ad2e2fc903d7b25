"""Running the torch-free runtime past one process: batch prediction and evaluation on a Ray
cluster (ray_batch). Importing this package does not import Ray."""
