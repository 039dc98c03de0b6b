"""Pure image transforms: decoding uploads and aligning faces."""
