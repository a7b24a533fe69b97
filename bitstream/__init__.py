"""The `.pmt` container: unit syntax, reader, writer, CRC, caps and entropy coding.

This package implements SPEC.md's bitstream layer and nothing else: it needs no model
and never imports torch, so probing, validating and remuxing streams is cheap.
"""
from .errors import ERROR_CODES, InvalidDataError
from .framing import SIGNATURE, VERSION_MAJOR, VERSION_MINOR
from .merge import merge_streams
from .reader import ReadUnit, Scene, Stream, read_streams, read_units
from .seeking import SeekPoint, StreamOutline, outline_streams, read_from_frame
from .truncate import truncate_rank
from .units import (
    Coding,
    EndOfStream,
    Index,
    IndexEntry,
    Keyframe,
    LatentCodec,
    Metadata,
    NoiseAlgorithm,
    PredictionType,
    SceneCut,
    SceneStart,
    SequenceHeader,
    Unit,
    UnitType,
    UnknownUnit,
    lowest_minor_version,
    minor_version_of,
)
from .writer import StreamWriter

__all__ = [
    "ERROR_CODES", "InvalidDataError", "SIGNATURE", "VERSION_MAJOR", "VERSION_MINOR",
    "ReadUnit", "Scene", "Stream", "read_streams", "read_units",
    "SeekPoint", "StreamOutline", "outline_streams", "read_from_frame", "StreamWriter", "merge_streams",
    "truncate_rank",
    "Coding", "EndOfStream", "Index", "IndexEntry", "Keyframe", "LatentCodec", "Metadata", "NoiseAlgorithm",
    "PredictionType", "SceneCut", "SceneStart", "SequenceHeader", "Unit", "UnitType", "UnknownUnit",
    "lowest_minor_version", "minor_version_of",
]
