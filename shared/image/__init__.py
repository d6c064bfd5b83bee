"""Images in: decoding uploads and files, and the bundle's preprocessing recipe (digit, photo),
the same code on the server's data loaders and the client.
"""

from shared.image.preprocessing import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_FORMATS,
    check_spec,
    decode_image,
    image_to_float,
    load_image,
    load_image_for_recipe,
    open_image,
    output_shape,
    preprocess,
    preprocess_bytes,
    preprocess_digit,
    preprocess_photo,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_FORMATS",
    "decode_image",
    "open_image",
    "load_image",
    "load_image_for_recipe",
    "check_spec",
    "output_shape",
    "preprocess",
    "preprocess_bytes",
    "preprocess_digit",
    "preprocess_photo",
    "image_to_float",
]
