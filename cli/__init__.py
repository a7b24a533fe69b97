"""Command-line tools: pmtenc, pmtdec, pmtprobe."""
