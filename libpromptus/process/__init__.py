"""The model-free formulas of SPEC.md's decoding process, shared by the decoder, the encoder and every engine."""
