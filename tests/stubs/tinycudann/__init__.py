"""Import-only stand-in for tiny-cuda-nn (CUDA-only); any use raises."""


def _unavailable(*args, **kwargs):
    raise RuntimeError(
        "tinycudann stand-in: tiny-cuda-nn needs CUDA; use the pure-torch encodings "
        "(ProgressiveBandFrequency / VanillaMLP) on CPU"
    )


Encoding = Network = NetworkWithInputEncoding = _unavailable


def free_temporary_memory() -> None:
    """No-op: there is no CUDA memory to free."""
