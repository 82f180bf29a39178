"""Import-only stand-in for nvdiffrast (CUDA-only)."""
