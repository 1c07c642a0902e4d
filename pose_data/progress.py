"""A tqdm progress bar that also shows the running counts by status."""

from __future__ import annotations

import sys

from tqdm import tqdm


class StatusProgress:
    def __init__(self, *, total: int, initial: int, statuses: tuple[str, ...], enabled: bool = True, unit: str = "row"):
        self.counts = {s: 0 for s in statuses}
        self.bar = tqdm(total=total, initial=initial, unit=unit, disable=not enabled, file=sys.stderr, dynamic_ncols=True)

    def update(self, rows: int, counts: dict[str, int]) -> None:
        for status, n in counts.items():
            self.counts[status] = self.counts.get(status, 0) + n
        self.bar.set_postfix({k: v for k, v in self.counts.items() if v}, refresh=False)
        self.bar.update(rows)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> StatusProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
