"""Text that can be stored anywhere: a file name that is not UTF-8, with its odd bytes escaped.

Python keeps the bytes of a file name that is not valid UTF-8 as lone surrogates (``b"caf\\xe9.mp4"`` reads as
``"caf\\udce9.mp4"``); pyarrow, a JSON reader that wants valid Unicode and a UTF-8 ``print`` all refuse such text.
:func:`utf8_text` writes each such character as its escape (``caf\\udce9.mp4``, as ``fyp-eval`` stores such names),
and leaves every other text as it is.
"""

from __future__ import annotations


def utf8_text(text: str) -> str:
    """``text`` with each lone surrogate (a byte of a non-UTF-8 file name) written as ``\\udcXX``; valid text unchanged."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text
