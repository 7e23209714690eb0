"""The llama.cpp process behind a ``LlamaCppStudent``: one GGUF served on a loopback port.

Started by ``LlamaCppStudent`` as ``python -m p2m.llamacpp.worker``. It loads the model
in llama.cpp's own server (xllamacpp) on a free loopback port, prints that address as its first
line of output, and serves until its standard input closes (the owner closed it, or died), then
leaves at once with ``os._exit``. Its own process, because freeing an xllamacpp server in a
process that goes on can hang (its destructor joins an HTTP thread that sometimes misses the
stop) and because llama.cpp installs its own SIGINT/SIGTERM handlers.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> None:
    """Serve the GGUF until stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the GGUF file")
    parser.add_argument("--parallel", type=int, default=1, help="decoding slots")
    parser.add_argument("--ctx", type=int, required=True, help="context tokens, all slots")
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.verbosity = -1
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:  # the owner reads this line as the reason
        print(f"error: {exc}", flush=True)
        os._exit(1)
    print(server.listening_address, flush=True)
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    main()
