"""jpegfreq: JPEG DCT coefficients straight into frequency-domain CNNs.

    bytes -> C reader (entropy decode only) -> coefficient-domain operator -> cube -> model

Public names (see the README and docs/design.md):
    read_header, read_coefficients, JpegError, ChannelSet, cube, Geometry,
    eval_geometry, sample_train, Photometric, Stats, Decoder, ItemReport, JpegLoader (torch)
The networks: jpegfreq.models (load_model, resnet50_dct, ...); jpegfreq itself never imports them.
Build facts: libjpeg_version, libjpeg_turbo.
"""
from . import _jpegfreq
from .channels import ChannelSet
from .errors import JpegError
from .geometry import Geometry, eval_geometry, sample_train
from .photometric import Photometric
from .pipeline import SOURCES, SpatialFallbackWarning, cube, rgb_image, spatial_cube
from .reader import (DEFAULT_MAX_PIXELS, Coefficients, Header, get_max_pixels, read_coefficients,
                     read_header, set_max_pixels)

libjpeg_version = _jpegfreq.libjpeg_version
libjpeg_turbo = bool(_jpegfreq.libjpeg_turbo)
arithmetic_decoding = bool(_jpegfreq.arithmetic_decoding)

__version__ = "0.2.0"

__all__ = [
    "read_header", "read_coefficients", "JpegError", "ChannelSet", "cube", "spatial_cube",
    "rgb_image", "Geometry", "eval_geometry", "sample_train", "Header", "Coefficients",
    "set_max_pixels", "get_max_pixels", "DEFAULT_MAX_PIXELS", "SOURCES",
    "SpatialFallbackWarning", "libjpeg_version", "libjpeg_turbo", "arithmetic_decoding",
    "Photometric", "Stats", "Decoder", "BatchError", "ItemReport", "JpegLoader",
]


def __getattr__(name):  # lazy: Stats, Decoder and JpegLoader pull in more modules (torch)
    if name == "Stats":
        from .stats import Stats
        return Stats
    if name in ("Decoder", "BatchError", "ItemReport"):
        from . import serving
        return getattr(serving, name)
    if name == "JpegLoader":
        from .loader import JpegLoader
        return JpegLoader
    raise AttributeError(name)
