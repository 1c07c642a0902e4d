"""WebDataset samples read from a plain (uncompressed) tar shard with the byte offset of each, so that a stream can
start reading a shard in the middle (a resumed run) or read one sample back alone.

Samples follow WebDataset's rules (its ``base_plus_ext``): members are grouped by the name up to the first dot of the
file name (``__key__``), the rest of the name, lowercased, is the field (``jpg``, ``pose.png``, ``000.jpg``);
directories and ``__...__`` metadata members are skipped. A sample's offset is the byte offset of its first member's
header, where a reader can :meth:`~io.IOBase.seek` to and parse from.

Every shard is opened through :func:`open_shard`, one place that tests and ``bench/data_stream.py`` wrap to see which
process opened which file and how many bytes it read. A hostile shard cannot make a reader allocate more than the
shard holds: a member, or a PAX / GNU long-name header, that claims more bytes than are left is refused before it is
read. Differences from WebDataset, none of which the project's shards have: a repeated field ends the shard (not
just the sample), and a global PAX header is refused (a resume in the middle of the shard would not see it).
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from webdataset.tariterators import base_plus_ext

#: The largest PAX or GNU long-name header accepted (names and a few keys; real ones are a few hundred bytes).
MAX_EXTENDED_HEADER = 1 << 20


class ShardReadError(tarfile.ReadError):
    """A shard that cannot be read on from some point (cut, garbage, a repeated member name); ``str(err)`` says why."""


def open_shard(url: str) -> BinaryIO:
    """The shard's bytes as a seekable binary file (the one place shards are opened)."""
    return open(url, "rb")  # noqa: SIM115 - the caller closes it


def is_empty_tar(url: str) -> bool:
    """True for a tar with no member (what a writer leaves for a shard whose rows were all filtered out): only a
    file of at most one tar record (10240 bytes) is opened (not through :func:`open_shard`: this is no stream's read),
    to read its first block."""
    if os.path.getsize(url) > tarfile.RECORDSIZE:
        return False
    with open(url, "rb") as file:
        block = file.read(tarfile.BLOCKSIZE)
    return len(block) == tarfile.BLOCKSIZE and block.count(0) == tarfile.BLOCKSIZE


def read_samples(url: str, offset: int = 0) -> Iterator[tuple[int, dict, int]]:
    """``(offset, sample, next_offset)`` for every sample of the shard from byte ``offset`` (0, or a sample's offset)
    to its end; ``next_offset`` is where the next sample starts (or the end block after the last), where a reader
    that stopped after this sample continues.

    Raises :class:`ShardReadError` where the shard stops being a readable tar (after yielding the samples before);
    the end of the shard must be a tar end-of-archive block, so a shard cut at a member boundary is found too.
    """
    with open_shard(url) as file:
        yield from _samples(file, url, offset)


def read_samples_at(url: str, offsets: list[int]) -> list[dict | ShardReadError]:
    """The sample that starts at each of ``offsets``, or the ShardReadError that says why there is none (the shard
    opened once; each sample read up to the next one's first header, no further). OSError when it cannot be opened."""
    found: list[dict | ShardReadError] = []
    with open_shard(url) as file:
        for offset in offsets:
            reader = _samples(file, url, offset)
            try:
                found.append(next(reader)[1])
            except StopIteration:
                found.append(ShardReadError(f"no sample at byte {offset}"))
            except ShardReadError as err:
                found.append(err)
            finally:
                reader.close()
    return found


def _samples(file: BinaryIO, url: str, offset: int) -> Iterator[tuple[int, dict, int]]:
    size = file.seek(0, os.SEEK_END)
    file.seek(offset)
    try:
        tar = _Tar(size, fileobj=file, mode="r", tarinfo=_Header)  # reads its first header at ``offset``
    except Exception as err:  # noqa: BLE001 - tarfile raises ValueError, IndexError, ... on forged headers
        raise ShardReadError(f"no tar member at byte {offset}: {type(err).__name__}: {err}") from None
    sample: dict | None = None
    start = offset
    while True:
        before = tar.offset
        try:
            info = tar.next()
        except Exception as err:  # noqa: BLE001 - as above
            raise ShardReadError(f"bad tar header after byte {before}: {type(err).__name__}: {err}") from None
        tar.members = []  # TarFile keeps every member it read; a long shard would pile them up
        if info is None:
            break
        if info.size < 0 or tar.offset <= info.offset:  # a forged size would send the reader back: it would never end
            raise ShardReadError(f"bad tar header at byte {info.offset}: {info.name} has size {info.size}")
        if not info.isreg() or info.name.startswith("__") and "/" not in info.name and info.name.endswith("__"):
            continue
        key, field = base_plus_ext(info.name)
        if key is None:
            continue
        if sample is not None and key != sample["__key__"]:
            yield start, sample, info.offset  # before reading on: a reader that wants one sample stops here
            sample = None
        if info.offset_data + info.size > size:  # before reading: a forged size would allocate that much
            raise ShardReadError(f"unexpected end of data: {info.name} is cut ({size - info.offset_data} of {info.size} bytes)")
        file.seek(info.offset_data)
        data = file.read(info.size)
        if len(data) != info.size:
            raise ShardReadError(f"unexpected end of data: {info.name} is cut ({len(data)} of {info.size} bytes)")
        file.seek(tar.offset)  # the next header (past the zero padding: TarFile then reads no byte of it)
        if sample is None:
            sample, start = {"__key__": key, "__url__": url}, info.offset
        field = field.lower()
        if field in sample:
            raise ShardReadError(f"{info.name}: the member name is repeated within sample {key}")
        sample[field] = data
    if not getattr(tar, "end_block_seen", False):
        raise ShardReadError(f"unexpected end of data: no end-of-archive block at byte {tar.offset} (the shard is cut or damaged there)")
    if sample is not None:
        yield start, sample, tar.offset


class _Tar(tarfile.TarFile):
    """A TarFile that knows the size of its shard before it reads its first header."""

    def __init__(self, shard_size: int, **kwargs) -> None:
        self.shard_size = shard_size
        super().__init__(**kwargs)


class _Header(tarfile.TarInfo):
    """TarFile's member headers, noting on the TarFile when it met the zero block that ends an archive (TarFile
    itself takes that, a cut file, and a header that does not parse after the first alike for the end), and refusing
    extended headers that claim more bytes than the shard holds, or a global PAX header."""

    @classmethod
    def fromtarfile(cls, tar):
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            tar.end_block_seen = True
            raise

    def _proc_member(self, tar):
        extended = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
        if self.size < 0:
            raise tarfile.SubsequentHeaderError(f"a header claims a negative size ({self.size})")
        if self.type in extended:
            left = tar.shard_size - tar.fileobj.tell()
            if self.size > min(MAX_EXTENDED_HEADER, left):
                raise tarfile.SubsequentHeaderError(f"an extended header claims {self.size} bytes ({left} left in the shard)")
            if self.type == tarfile.XGLTYPE:
                raise tarfile.SubsequentHeaderError("a global PAX header (not written by WebDataset's writer) is not supported")
        return super()._proc_member(tar)
