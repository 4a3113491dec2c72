"""A child process that reads images for the fuzzing tests, under a memory limit.

Reads one JSON request per line on stdin ({"path": ..., "max_pixels": ...}) and answers one
JSON line: {"ok": true, "shape": [...], "dtype": ...} or {"ok": false, "type": ..., "message":
...}, with the process's peak resident memory in MiB. Running apart lets the test bound time
(a hang is a missing answer) and memory (an address-space limit) without risking the test run.
"""

from __future__ import annotations

import json
import resource
import sys

from srgan.engines import read_image


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        try:
            picture = read_image(request["path"], max_pixels=request["max_pixels"])
            answer = {"ok": True, "shape": list(picture.pixels.shape), "dtype": str(picture.pixels.dtype)}
        except Exception as error:  # the test judges what escaped; this process must keep answering
            answer = {"ok": False, "type": type(error).__name__, "message": str(error)}
        answer["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
