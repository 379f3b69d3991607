"""A small training loop logged with dreamlake in local mode (the embedded default).

Run: python examples/train_demo.py [--local-path .dreamlake]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import tempfile
import time
from pathlib import Path

from dreamlake import LoggingHandler, Session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--local-path", default=".dreamlake")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20_000, help="steps per epoch")
    args = parser.parse_args()

    started = time.perf_counter()
    with Session(
        name="demo-run", workspace="demo", local_path=args.local_path, tags=["demo"]
    ) as session:
        session.parameters().set(model={"lr": 3e-4, "layers": 12}, epochs=args.epochs, steps=args.steps)
        logger = logging.getLogger("train")  # standard logging lands in the run too
        logger.setLevel(logging.INFO)
        logger.addHandler(LoggingHandler(session))
        train_loss = session.track("train_loss", description="loss per step")
        val_acc = session.track("val_accuracy")
        step = 0
        for epoch in range(args.epochs):
            for _ in range(args.steps):
                loss = 2.0 * math.exp(-step / 30_000) + random.random() * 0.05
                train_loss.append(value=loss, step=step, epoch=epoch)
                step += 1
            accuracy = 1.0 - 0.5 * math.exp(-epoch)
            val_acc.append(value=accuracy, epoch=epoch)
            session.log(f"epoch {epoch} done", level="info", epoch=epoch, accuracy=accuracy)
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = Path(tmp) / "checkpoint.json"
                checkpoint.write_text(json.dumps({"epoch": epoch, "accuracy": accuracy}))
                # Saving the same prefix and name again replaces the earlier checkpoint.
                session.file(checkpoint, prefix="/checkpoints", tags=["latest"]).save()
        logger.info("training finished after %d steps", step)
        tail = train_loss.read(start_index=step - 3, limit=3)
        stats = train_loss.stats()
        files = session.file(prefix="/checkpoints").list()
        params = session.parameters().get(flatten=False)
    elapsed = time.perf_counter() - started

    print(f"logged {step:,} steps in {elapsed:.2f} s ({step / elapsed:,.0f} points/s, all on disk)")
    print(f"train_loss holds {stats['totalDataPoints']:,} points; the last three:")
    for point in tail["data"]:
        print(f"  {point['index']}: {point['data']}")
    print(f"parameters: {params}")
    checkpoint = files[0]
    print(f"checkpoint: {checkpoint['filename']}, {checkpoint['sizeBytes']} bytes, "
          f"sha256 {checkpoint['checksum']}")
    logs = (session.path / "logs" / "logs.jsonl").read_text().splitlines()
    print(f"{len(logs)} log entries; the last: {logs[-1]}")
    print(f"data went to {session.path.resolve()}/")
    print(f"  e.g. {session.path / 'tracks' / 'train_loss' / 'data.jsonl'}")


if __name__ == "__main__":
    main()
