"""How large a pose frame that comes from a file may be, checked before its pixels are allocated.

A header, a keypoints table or a video states a frame size; a hostile or broken file can state any size (a 100 KB PNG
can declare 20000 x 20000 pixels, a keypoints row a 100000 x 100000 canvas). These limits are checked against the
stated size first, so a refusal costs nothing:

- :data:`MAX_FRAME_SIDE` pixels on either side (16384: HEVC's and AV1's largest frame; 8K video is 7680 x 4320);
- :data:`MAX_FRAME_PIXELS` pixels in all (PIL's own decompression-bomb warning limit, about 9459 x 9459: 256 MiB as RGB);
- :data:`MAX_ASPECT_RATIO`: the longer side at most this many times the shorter. Fitting a frame to the output size
  scales it to cover the output and cuts out the centre, so the scaled frame is larger than the output by the ratio of
  their shapes: a 1 x 20000 strip fitted to 512 x 512 would be scaled to 512 x 10,240,000 pixels (15 GB) to keep one
  512-pixel square of it.
"""

from __future__ import annotations

from pose_data.media.image_decode import PIL_DEFAULT_MAX_PIXELS

MAX_FRAME_SIDE = 16384
MAX_FRAME_PIXELS = PIL_DEFAULT_MAX_PIXELS
MAX_ASPECT_RATIO = 16
#: The most bytes a skeleton frame file may hold: an uncompressed RGB frame at :data:`MAX_FRAME_PIXELS` (a BMP)
#: plus 1 MiB of headers. A file is read whole before decoding, so this bounds that read.
MAX_FRAME_FILE_BYTES = 3 * MAX_FRAME_PIXELS + 2**20


def frame_size_problem(width: int, height: int, *, aspect: bool = True) -> str | None:
    """Why a ``width`` x ``height`` frame is refused (the limit it breaks, in words), or None when it is within them.
    ``aspect``: check :data:`MAX_ASPECT_RATIO` too (a frame that is drawn, not fitted, needs only the size limits)."""
    if width > MAX_FRAME_SIDE or height > MAX_FRAME_SIDE:
        return f"{width}x{height} pixels: a side is longer than {MAX_FRAME_SIDE}"
    if width * height > MAX_FRAME_PIXELS:
        return f"{width}x{height} = {width * height:,} pixels, more than {MAX_FRAME_PIXELS:,}"
    if aspect and max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        return f"{width}x{height} pixels: one side is more than {MAX_ASPECT_RATIO} times the other"
    return None
