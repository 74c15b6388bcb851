"""Run a list of `tune run` jobs in this one process (``python compat_061_runner.py JOBS``).

JOBS is a JSON list of ``{"id", "argv"}``; results go to ``JOBS.results.json`` as
``{id: exit status}``. Each job's output follows a ``=== <id>`` line. One process for all
jobs spares each run the interpreter and torch start-up; the distributed recipes run as
a single rank (the environment torchrun would set for ``--nproc_per_node 1``).
"""

import json
import os
import socket
import sys
import traceback


def main(jobs_path: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    from torchtune._cli.tune import main as tune

    results = {}
    for job in json.load(open(jobs_path)):
        print(f"=== {job['id']}", flush=True)
        print(f"=== {job['id']}", file=sys.stderr, flush=True)
        try:
            results[job["id"]] = tune(job["argv"])
        except SystemExit as e:
            results[job["id"]] = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            results[job["id"]] = 1
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        json.dump(results, open(jobs_path + ".results.json", "w"))


if __name__ == "__main__":
    main(sys.argv[1])
