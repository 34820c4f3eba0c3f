"""`difflab serve RUN_OR_DIR`: the local web UI (difflab.web; needs the `ui` extra)."""

from __future__ import annotations

from difflab.core.errors import UsageError


def cmd_serve(args) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError("the web UI needs gradio; install it with pip install 'difflab[ui]'") from None
    from difflab.web.serve import launch

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"difflab serve: listening on {args.host}: anyone who can reach it can use the UI")
    launch(args.models, host=args.host, port=args.port, out=args.out)
    return 0


def add_commands(sub, common) -> None:
    s = sub.add_parser("serve", parents=[common], help="local web UI: sample and edit in a browser")
    s.add_argument("models", metavar="RUN_OR_DIR",
                   help="a run dir, a model file, or a folder of them (listed in the UI)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default: the first free one from 7860)")
    s.add_argument("--out", help="where the PNGs go (default: web-out/ beside the models)")
    s.set_defaults(func=cmd_serve)
