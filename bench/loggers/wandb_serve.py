"""The live W&B logger's child process: reads pickled operations from stdin, applies them with the in-process
writer (``bench.loggers.wandb.Writer``), answers barriers and finished runs on stdout. Started by
``bench.loggers.wandb.Remote``; when stdin closes (the training process ended or was killed) every open W&B run is
finished before it exits. Its stdout is the reply channel only: anything else printed goes to stderr."""
from __future__ import annotations

import os
import pickle
import struct
import sys
import threading


def main() -> None:
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints (wandb, warnings) go to stderr, never into the reply channel
    sys.stdout = sys.stderr
    inp = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    out = os.fdopen(reply_fd, "wb", buffering=0)
    lock = threading.Lock()

    def reply(kind: str, key: int) -> None:
        data = pickle.dumps((kind, key))
        with lock:
            try:
                out.write(struct.pack("<I", len(data)) + data)
            except OSError:
                pass

    from bench.loggers.wandb_writer import Writer

    writer = Writer(on_done=lambda hid, ok: reply("done", hid))
    while True:
        head = inp.read(4)
        if len(head) < 4:
            break
        msg = pickle.loads(inp.read(struct.unpack("<I", head)[0]))
        kind = msg[0]
        if kind == "start":
            writer.start(*msg[1:])
        elif kind in ("barrier", "drain"):
            key = msg[1]
            event = threading.Event()
            writer.q.put((kind, event))
            threading.Thread(target=lambda e=event, k=key: (e.wait(), reply("ack", k)), daemon=True).start()
        else:
            writer.send(kind, *msg[1:])
    writer.drain(3600)  # the parent is gone or done: finish every open W&B run


if __name__ == "__main__":
    main()
