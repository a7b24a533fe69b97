"""Rebuilding one damaged stream from the units that survived, for error concealment.

`StreamRepair` takes a stream's pieces from `bitstream.salvage` in order (units whose
CRC verifies, and lost byte ranges), places each keyframe in its scene, infers what the
losses held, and `finish` returns a `Stream` that `decoding.decode_frames` decodes as
usual: lost keyframes replaced by stand-ins (good keyframes moved to other frames, see
`libpromptus.bitstream.concealment` for the rules), lost scene starts by `LostSceneStart`. It
records a `Concealment` per concealed frame range and a note per loss that cost no
frames.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from . import (
    EndOfStream,
    Index,
    InvalidDataError,
    Keyframe,
    Metadata,
    ReadUnit,
    Scene,
    SceneCut,
    SceneStart,
    SequenceHeader,
    Stream,
    UnitType,
)
from .framing import RawUnit
from .reader import parse_unit
from .salvage import LostBytes, StreamPrefix
from .units import LostSceneStart
from .validation import check_unit

_UNIT_NAMES = {kind: kind.name.lower().replace("_", " ") for kind in UnitType}


@dataclass(frozen=True)
class Concealment:
    """Frames decoded from concealed data, in display indices of the file.

    `frames` were generated from a replaced prompt or latent; `follow` are the frames
    after them whose latent chain passes through them (up to the next scene start that
    survived), which differ from an undamaged decode too. `cause` names the damage.
    """

    frames: range
    follow: range
    cause: str

    def describe(self) -> str:
        """One line, e.g. `concealed frames 12..21 (keyframe lost: crc_mismatch at byte 2528)`."""
        text = f"concealed {_span(self.frames)} ({self.cause})"
        if not self.follow:
            return text
        return f"{text}; {_span(self.follow)} {'follows' if len(self.follow) == 1 else 'follow'} from them"


def _span(frames: range) -> str:
    return f"frame {frames[0]}" if len(frames) == 1 else f"frames {frames[0]}..{frames[-1]}"


def _describe(loss: LostBytes) -> str:
    if loss.unit_type is None:
        return f"{loss.size} bytes lost: {loss.code} at byte {loss.offset}"
    name = _UNIT_NAMES.get(loss.unit_type, f"unit of type {loss.unit_type}")
    return f"{name} lost: {loss.code} at byte {loss.offset}"


def _after_end(loss: LostBytes, stream: int) -> str:
    """The note for bytes after stream `stream`'s end-of-stream unit, which belong to no stream."""
    what = "are a cut-off signature" if loss.code == "truncated" else "are not a stream"
    return f"bytes {loss.offset}..{loss.offset + loss.size - 1} after the end of stream {stream} {what}: skipped"


def _causes(losses: list[LostBytes]) -> str:
    return ", ".join(_describe(loss) for loss in losses)


@dataclass
class _Draft:
    """A scene as it survived: its start (None: lost), keyframes and losses in stream order."""

    start: ReadUnit | None
    start_loss: LostBytes | None
    cut: ReadUnit | None
    events: list[ReadUnit | LostBytes] = field(default_factory=list)

    @property
    def keyframes(self) -> list[ReadUnit]:
        return [e for e in self.events if isinstance(e, ReadUnit)]


class StreamRepair:
    """Collects one stream's surviving units and losses; `finish` rebuilds the stream."""

    def __init__(self, prefix: StreamPrefix, number: int) -> None:
        self.prefix = prefix
        self.number = number
        self.header_unit: ReadUnit | None = None
        self.units: list[ReadUnit] = []
        self.drafts: list[_Draft] = []
        self.cut: ReadUnit | None = None
        self.metadata: list[tuple[str, str]] = []
        self.index: Index | None = None
        self.end: EndOfStream | None = None
        self.last_keyframe = -1
        self.first_frame = 0                 # display index in the file of the stream's frame 0
        self.concealed: list[Concealment] = []
        self.notes: list[str] = []

    # ------------------------------------------------------------ collecting

    def add_loss(self, loss: LostBytes) -> None:
        """Record lost bytes where they fall: in the current scene, as a lost scene start, or as a note
        (after the end-of-stream unit they belong to no stream and cost no frames)."""
        kind = loss.unit_type
        if self.end is not None:
            self.notes.append(_after_end(loss, self.number))
            return
        if self.header_unit is None or kind == UnitType.SEQUENCE_HEADER:
            raise InvalidDataError(loss.code, "the sequence header is damaged: the stream cannot be decoded",
                                   loss.offset)
        if kind == UnitType.SCENE_START:
            self.drafts.append(_Draft(None, loss, self.cut))
            self.cut = None
        elif kind in (UnitType.KEYFRAME, None):
            if self.drafts:
                self.drafts[-1].events.append(loss)
            else:                        # the first scene's start went with these bytes
                self.drafts.append(_Draft(None, loss, None))
        elif kind == UnitType.END_OF_STREAM:
            self.notes.append(f"the end-of-stream unit is damaged ({loss.code} at byte {loss.offset})")
        else:
            name = _UNIT_NAMES.get(kind, f"type {kind}")
            self.notes.append(f"dropped a damaged {name} unit ({loss.code} at byte {loss.offset})")

    def add_unit(self, raw: RawUnit) -> None:
        """Parse and check a unit whose CRC verified (as strictly as the reader does) and place it."""
        header = None if self.header_unit is None else self.header_unit.unit
        try:
            unit = parse_unit(raw.unit_type, raw.may_ignore, raw.payload, header, self.prefix.minor)
            check_unit(unit, header)
            self._place(ReadUnit(unit, raw.offset, raw.offset - self.prefix.offset, raw.size, self.number,
                                 raw.unit_type, self.prefix.minor))
        except InvalidDataError as err:
            raise InvalidDataError(err.code, err.message, raw.offset if err.offset is None else err.offset) from None

    def _place(self, item: ReadUnit) -> None:
        unit = item.unit
        self.units.append(item)
        if self.header_unit is None:
            self.header_unit = item          # parse_unit refuses anything else first
        elif isinstance(unit, SequenceHeader):
            raise InvalidDataError("bad_unit_order", "a second sequence header")
        elif isinstance(unit, SceneCut):
            self.cut = item
        elif isinstance(unit, SceneStart):
            if unit.first_frame <= self.last_keyframe:
                raise InvalidDataError("frame_order", f"scene starts at frame {unit.first_frame}, not after "
                                                      f"keyframe {self.last_keyframe}")
            self.drafts.append(_Draft(item, None, self.cut))
            self.cut = None
        elif isinstance(unit, Keyframe):
            self._keyframe(item)
        elif isinstance(unit, Metadata):
            self.metadata.extend(unit.entries)
        elif isinstance(unit, Index):
            self.index = unit
        elif isinstance(unit, EndOfStream):
            self.end = unit

    def _keyframe(self, item: ReadUnit) -> None:
        unit: Keyframe = item.unit
        if not self.drafts:
            raise InvalidDataError("bad_unit_order", "a keyframe before the first scene start")
        if unit.frame_index <= self.last_keyframe:
            raise InvalidDataError("frame_order", f"keyframe {unit.frame_index} does not follow keyframe "
                                                  f"{self.last_keyframe}")
        draft = self.drafts[-1]
        if draft.start is not None and unit.frame_index < draft.start.unit.first_frame:
            raise InvalidDataError("frame_order", f"keyframe {unit.frame_index} comes before its scene's first "
                                                  f"frame {draft.start.unit.first_frame}")
        previous = draft.keyframes
        new_rank = bool(previous) and previous[-1].unit.rank != unit.rank
        if new_rank or self.cut is not None:
            if not draft.events or not isinstance(draft.events[-1], LostBytes):
                if self.cut is not None:
                    raise InvalidDataError("bad_unit_order", "a scene cut is not followed by a scene start")
                raise InvalidDataError("rank_mismatch", f"rank {unit.rank} in a scene of rank "
                                                        f"{previous[-1].unit.rank}")
            # A scene cut is followed by a scene start, and ranks are equal within a scene:
            # the bytes lost before this keyframe held a scene start.
            losses = []
            while draft.events and isinstance(draft.events[-1], LostBytes):
                losses.insert(0, draft.events.pop())
            draft = _Draft(None, losses[0], self.cut, losses[1:])
            self.drafts.append(draft)
            self.cut = None
        draft.events.append(item)
        self.last_keyframe = unit.frame_index

    # ------------------------------------------------------------ rebuilding

    def finish(self, first_frame: int) -> Stream:
        """The repaired stream whose frame 0 is file frame `first_frame`; fills `concealed` and `notes`."""
        if self.header_unit is None:
            raise InvalidDataError("truncated", "the input ends after a stream's signature", self.prefix.offset)
        if self.last_keyframe < 0:
            raise InvalidDataError("crc_mismatch", f"no keyframe of stream {self.number} survived: nothing to "
                                                   f"conceal its frames from", self.prefix.offset)
        self.first_frame = first_frame
        total = self._frame_count()
        drafts, firsts = self._scene_ranges(total)
        scenes = []
        chain_start = 0
        for number, draft in enumerate(drafts):
            first = firsts[number]
            last = firsts[number + 1] - 1 if number + 1 < len(drafts) else total - 1
            if draft.start is not None:
                chain_start = len(self.concealed)
            keyframes, concealed = self._conceal_scene(draft, first, last, drafts, number)
            scenes.append(Scene(draft.start or self._lost_start(draft, first), draft.cut, keyframes))
            self.concealed.extend(Concealment(self._file(r), range(0), cause) for r, cause in concealed)
            # Frames after a concealed range follow from it up to the end of the latent chain.
            chain_end = first_frame + last + 1
            self.concealed[chain_start:] = [dataclasses.replace(c, follow=range(c.frames.stop, chain_end))
                                            for c in self.concealed[chain_start:]]
        end = EndOfStream(total, self.end.index_offset if self.end is not None else 0)
        return Stream(self.header_unit.unit, self.header_unit, end, self.units, scenes, self.metadata, self.index,
                      first_frame)

    def _file(self, frames: range) -> range:
        """Stream frame indices as display indices of the file."""
        return range(self.first_frame + frames.start, self.first_frame + frames.stop)

    def _frame_count(self) -> int:
        """Frames of the stream: as its end-of-stream unit says, else its index, else up to the last keyframe."""
        if self.end is not None:
            if self.end.frame_count <= self.last_keyframe:
                raise InvalidDataError("frame_count_mismatch", f"end_of_stream says {self.end.frame_count} frames, "
                                                               f"keyframe {self.last_keyframe} survived")
            return self.end.frame_count
        listed = [e.frame_index for e in self.index.entries if e.unit_type == UnitType.KEYFRAME] if self.index else []
        return max([self.last_keyframe, *listed]) + 1

    def _scene_ranges(self, total: int) -> tuple[list[_Draft], list[int]]:
        """The scenes that hold frames and the first frame of each (stream indices)."""
        drafts: list[_Draft] = []
        firsts: list[int] = []
        covered = -1                         # the last frame that surviving units place
        for draft in self.drafts:
            if draft.start is not None:
                first = draft.start.unit.first_frame
            elif (draft.start_loss.unit_type == UnitType.SCENE_START and draft.events
                  and isinstance(draft.events[0], ReadUnit)):
                first = draft.events[0].unit.frame_index
            else:
                first = covered + 1
            if drafts and not drafts[-1].keyframes and firsts[-1] >= first:
                self._dropped(self._losses(drafts.pop()))
                firsts.pop()
            if not draft.keyframes and first >= total:
                self._dropped(self._losses(draft))
                continue
            drafts.append(draft)
            firsts.append(first)
            covered = draft.keyframes[-1].unit.frame_index if draft.keyframes else first
        if firsts[0] != 0:
            raise InvalidDataError("frame_order", f"the first scene starts at frame {firsts[0]}, not 0")
        return drafts, firsts

    def _dropped(self, losses: list[LostBytes]) -> None:
        self.notes.append(f"dropped damaged units that held no frames ({_causes(losses)})")

    @staticmethod
    def _losses(draft: _Draft) -> list[LostBytes]:
        return [loss for loss in (draft.start_loss, *draft.events) if isinstance(loss, LostBytes)]

    def _conceal_scene(self, draft: _Draft, first: int, last: int, drafts: list[_Draft],
                       number: int) -> tuple[list[ReadUnit], list[tuple[range, str]]]:
        """The scene's keyframes with stand-ins for lost ones, and its concealed ranges with their causes."""
        concealed: list[tuple[range, str]] = []
        chained = []
        if draft.start is None:
            chained = [f"continued from frame {self.first_frame + first - 1}'s latent" if number > 0
                       else "continued from a zero latent"]
        keyframes = draft.keyframes
        if not keyframes:
            self._require_cause(self._losses(draft), first, last)
            held = self._nearest_keyframe(drafts, number)
            stand_ins = [_moved(held, first)] + ([_moved(held, last)] if last > first else [])
            cause = [_causes(self._losses(draft)), f"held keyframe {self._file_frame(held)}", *chained]
            return stand_ins, [(range(first, last + 1), "; ".join(cause))]
        if chained:
            concealed.append((range(first, last + 1), f"{_describe(draft.start_loss)}; {chained[0]}"))
        out: list[ReadUnit] = []
        losses: list[LostBytes] = []
        previous: ReadUnit | None = None
        for event in draft.events:
            if isinstance(event, LostBytes):
                losses.append(event)
                continue
            frame = event.unit.frame_index
            if previous is None and frame > first:
                cause = losses or ([draft.start_loss] if draft.start_loss else [])
                self._require_cause(cause, first, frame - 1)
                out.append(_moved(event, first))
                repeated = f"{_causes(cause)}; repeated keyframe {self._file_frame(event)}"
                concealed.append((range(first, frame + 1), repeated))
            elif previous is not None and losses:
                concealed.append((range(previous.unit.frame_index + 1, frame + 1), _causes(losses)))
            out.append(event)
            previous, losses = event, []
        if previous.unit.frame_index < last:
            self._require_cause(losses, previous.unit.frame_index + 1, last)
            out.append(_moved(previous, last))
            concealed.append((range(previous.unit.frame_index + 1, last + 1),
                              f"{_causes(losses)}; repeated keyframe {self._file_frame(previous)}"))
        elif losses and number + 1 == len(drafts) and self.end is None:
            self.notes.append(f"the stream ends at frame {self.first_frame + last}: what followed is lost "
                              f"({_causes(losses)})")
        elif losses:
            self._dropped(losses)
        return out, concealed

    def _file_frame(self, item: ReadUnit) -> int:
        return self.first_frame + item.unit.frame_index

    @staticmethod
    def _require_cause(losses: list[LostBytes], first: int, last: int) -> None:
        if not losses:
            raise InvalidDataError("frame_order", f"frames {first}..{last} have no keyframe and nothing was lost")

    @staticmethod
    def _nearest_keyframe(drafts: list[_Draft], number: int) -> ReadUnit:
        """The last good keyframe before scene `number`, else the first after it."""
        before = [k for d in drafts[:number] for k in d.keyframes]
        after = [k for d in drafts[number + 1:] for k in d.keyframes]
        return before[-1] if before else after[0]

    def _lost_start(self, draft: _Draft, first: int) -> ReadUnit[LostSceneStart]:
        loss = draft.start_loss
        return ReadUnit(LostSceneStart(first), loss.offset, loss.offset - self.prefix.offset, loss.size, self.number,
                        UnitType.SCENE_START, self.prefix.minor)


def _moved(item: ReadUnit, frame_index: int) -> ReadUnit:
    """A stand-in keyframe: `item`'s factors at another frame."""
    return dataclasses.replace(item, unit=dataclasses.replace(item.unit, frame_index=frame_index))
