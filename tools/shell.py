"""Get a shell (or run one command) on any board with the given caps, then give it back.

    python tools/shell.py board=rpi4 camera=yes          # interactive shell
    python tools/shell.py board=rpi4 -- uname -a         # one command; exits with its status

A stop-gap until `schedctl ssh` exists: it queues a request, waits for a board, logs in
with the OpenSSH client through the scheduler's tunnel and closes the request on exit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import grpc
from boruta.v1 import requests_pb2, requests_pb2_grpc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scheduler",
        default=os.environ.get("BORUTA_SCHEDULER", "127.0.0.1:50051"),
        help="scheduler address [env: BORUTA_SCHEDULER]",
    )
    parser.add_argument(
        "--user",
        default=os.environ.get("BORUTA_USER", os.environ.get("USER", "me")),
        help="who you are [env: BORUTA_USER]",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=int(os.environ.get("BORUTA_PRIORITY", "0")),
        help="1 (most important) to 16 [env: BORUTA_PRIORITY]",
    )
    parser.add_argument("caps", nargs="*", metavar="KEY=VALUE", help="caps the board must have")
    argv = sys.argv[1:]
    command: list[str] = []
    if "--" in argv:
        command = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    args = parser.parse_args(argv)
    caps = dict(item.split("=", 1) for item in args.caps)
    me = (("x-boruta-user", args.user),)
    with grpc.insecure_channel(args.scheduler) as channel:
        requests = requests_pb2_grpc.RequestsStub(channel)
        try:
            request = requests.NewRequest(
                requests_pb2.NewRequestRequest(caps=caps, priority=args.priority), metadata=me
            ).request
        except grpc.RpcError as exc:
            sys.exit(f"boruta: {exc.details()}")
        print(f"request {request.id} queued; waiting for a board ...", file=sys.stderr)
        status = 1
        try:
            reply = requests.AcquireWorker(
                requests_pb2.AcquireWorkerRequest(request_id=request.id), metadata=me
            )
            access = reply.access
            print(f"got {reply.job.worker_uuid} as {access.username}", file=sys.stderr)
            with tempfile.NamedTemporaryFile("w", suffix=".key", delete=False) as key:
                key.write(access.private_key_pem)
            os.chmod(key.name, 0o600)
            try:
                status = subprocess.call(
                    [
                        "ssh",
                        "-i",
                        key.name,
                        "-p",
                        str(access.port),
                        "-o",
                        "IdentitiesOnly=yes",
                        "-o",
                        "StrictHostKeyChecking=no",
                        "-o",
                        "UserKnownHostsFile=/dev/null",
                        "-o",
                        "LogLevel=ERROR",
                        f"{access.username}@{access.host}",
                        *command,
                    ]
                )
            finally:
                os.unlink(key.name)
        except KeyboardInterrupt:
            status = 130
        finally:
            requests.CloseRequest(
                requests_pb2.CloseRequestRequest(request_id=request.id), metadata=me
            )
            print(f"request {request.id} closed", file=sys.stderr)
    sys.exit(status)


if __name__ == "__main__":
    main()
