"""Run ``fyp-train stage1|stage2`` (argv after the record folder) and write, per process, the keys of the batches it
trained on to ``RECORD/rank<r>.json``. Launched by the tests under torchrun to see how the ranks split the data."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    from model.training.cli import build_parser, stage_config

    record, argv = Path(sys.argv[1]), sys.argv[2:]
    args = build_parser().parse_args(argv)
    cfg = stage_config(args)
    if args.command == "stage1":
        from model.training.stage1 import Stage1Trainer as base_class
    else:
        from model.training.stage2 import Stage2Trainer as base_class

    class Recording(base_class):
        seen: list[list[str]] = []

        def next_batch(self) -> dict:
            batch = super().next_batch()
            self.seen.append(batch["keys"])
            return batch

    trainer = Recording(cfg)
    trainer.train()
    record.mkdir(parents=True, exist_ok=True)
    (record / f"rank{trainer.accelerator.process_index}.json").write_text(json.dumps(Recording.seen))


if __name__ == "__main__":
    main()
