"""Import-only stand-in for nvdiffrast.torch (CUDA-only); any use raises."""


class _Unavailable:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("nvdiffrast stand-in: nvdiffrast needs CUDA")


RasterizeGLContext = RasterizeCudaContext = _Unavailable


def _unavailable(*args, **kwargs):
    raise RuntimeError("nvdiffrast stand-in: nvdiffrast needs CUDA")


rasterize = interpolate = antialias = texture = _unavailable
