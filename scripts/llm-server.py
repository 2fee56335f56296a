"""llama.cpp's HTTP server (PyPI xllamacpp) on loopback, for the router's
tests and benchmarks: `python3 llm-server.py MODEL.gguf PORT [THREADS]`.

Prints `listening http://127.0.0.1:PORT` once it serves, and serves until
SIGTERM or SIGINT. OpenAI's /v1/chat/completions (streaming with
include_usage), Anthropic's /v1/messages, /health and /metrics."""

import signal
import sys

import xllamacpp


def main() -> None:
    model, port = sys.argv[1], int(sys.argv[2])
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    p = xllamacpp.CommonParams()
    p.model.path = model
    p.n_ctx = 2048
    p.n_predict = 256
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.n_parallel = 2
    p.hostnames = ["127.0.0.1"]
    p.port = port
    server = xllamacpp.Server(p)
    print("listening", server.listening_address, flush=True)
    signal.sigwait([signal.SIGTERM, signal.SIGINT])


if __name__ == "__main__":
    main()
