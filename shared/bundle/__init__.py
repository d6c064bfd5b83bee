"""The bundle file: one safetensors file that carries a quantised network
(docs/ARCHITECTURE.md, "Bundle layout").

    format    Bundle, encode / decode / validate, ids (format versions 1, 2 and 3: the DAG)
    files     bundles on disk: <id>.siq read back against its name, atomic writes
    v2        format version 2's per-layer storage (packed, Huffman, sparse, block layouts)
    bitpack   fixed-width b-bit code packing
    entropy   canonical Huffman coding
    checksum  the manifest's checksum of the bundle's own content
    signing   HMAC signatures of a bundle's bytes, detached in <file>.sig
"""

from shared.bundle.checksum import CHECKSUM_KEY, check_content, content_checksum, with_checksum
from shared.bundle.files import (
    BUNDLE_SUFFIX,
    TEMP_PREFIX,
    read_bundle_file,
    remove_temp_files,
    write_bundle_atomic,
)
from shared.bundle.format import (
    DAG_VERSION,
    FORMAT,
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    MANIFEST_KEY,
    MANIFEST_ZLIB_KEY,
    MAX_BUNDLE_BYTES,
    Bundle,
    bundle_id,
    decode_bundle,
    encode_bundle,
    layer_weights,
    validate,
)
from shared.bundle.signing import read_signature, sign, signature_path, verify, write_signature

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "DAG_VERSION",
    "MANIFEST_KEY",
    "MANIFEST_ZLIB_KEY",
    "MAX_BUNDLE_BYTES",
    "BUNDLE_SUFFIX",
    "Bundle",
    "bundle_id",
    "encode_bundle",
    "decode_bundle",
    "read_bundle_file",
    "write_bundle_atomic",
    "remove_temp_files",
    "TEMP_PREFIX",
    "layer_weights",
    "validate",
    "CHECKSUM_KEY",
    "content_checksum",
    "with_checksum",
    "check_content",
    "sign",
    "verify",
    "signature_path",
    "read_signature",
    "write_signature",
]
