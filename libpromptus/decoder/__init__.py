"""Units in, frames out: SPEC.md's decoding process over an engine (`decoder.Decoder`), and the prompt dump."""
