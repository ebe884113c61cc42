"""``hub serve``: the local, in-memory Hub that the demo and the tests use, for a user's own shell."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import threading
from argparse import Namespace

from .. import command
from .._parsing import write


@command(
    "hub", help="run a local Hub server on 127.0.0.1 (try the Hub workflow offline)",
    description="ACTION 'serve' starts an in-memory Hub-compatible server on 127.0.0.1 for one user, prints the "
                "lines that point huggingface_hub (and this library) at it, and serves until Ctrl-C. Repos live in "
                "memory and are gone when it stops.",
    arguments=[("action", dict(choices=["serve"], metavar="ACTION",
                               help="serve: print the HF_ENDPOINT/HF_TOKEN lines and serve until Ctrl-C")),
               ("--host", dict(default="127.0.0.1", help="address to listen on (only 127.0.0.1 is accepted)")),
               ("--port", dict(type=int, default=0, help="port to listen on (0 picks a free one)")),
               ("--user", dict(default="local-user",
                               help="the user the printed token belongs to: they write in the namespace USER/"))])
def _serve(args: Namespace) -> int:
    from ...errors import ConfigError
    from ...localhub import LocalHub

    if args.host != "127.0.0.1":
        raise ConfigError(f"--host {args.host} refused: the local Hub has no TLS and serves 127.0.0.1 only.")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port number (0 picks a free one).")
    hub = LocalHub(port=args.port, users={})
    try:
        token = hub.add_user(args.user)
        hub.start()
    except ValueError as exc:
        raise ConfigError(f"--user {args.user!r} is not a valid Hub user name (letters, digits, '-', '_', '.').") \
            from exc
    except OSError as exc:
        raise ConfigError(f"Cannot listen on 127.0.0.1:{args.port} ({exc.strerror or exc}): pick another --port, "
                          "or 0 for a free one.") from exc
    cache = tempfile.mkdtemp(prefix="hlv-hub-cache-")  # the local Hub's downloads stay apart from the Hub's
    write(f"# local Hub for user {args.user}, in memory until Ctrl-C; paste into a shell:\n"
          f"export HF_ENDPOINT={hub.url}\nexport HF_TOKEN={token}\nexport HF_HUB_DISABLE_XET=1\n"
          f"export HF_HUB_CACHE={cache}")
    sys.stdout.flush()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when the parent started us with SIGINT ignored
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.2):
            pass
        sys.stderr.write("hf-lottery hub: stopped\n")
    finally:
        hub.stop()
        shutil.rmtree(cache, ignore_errors=True)
    return 0
