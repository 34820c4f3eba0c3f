"""`difflab serve`: the app on 127.0.0.1, offline (analytics off, system fonts), one job at a time."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported anywhere

from difflab.web.app import CSS, build_app, theme  # noqa: E402
from difflab.web.callbacks import Session  # noqa: E402


def out_dir(root: str | Path) -> Path:
    """Where the UI writes its PNGs by default: web-out/ beside the models."""
    root = Path(root).resolve()
    return (root if root.is_dir() else root.parent) / "web-out"


def launch(root: str | Path, *, host: str = "127.0.0.1", port: int | None = None,
           out: str | Path | None = None, block: bool = True):  # fmt: skip
    """Serve the models of `root`; with block=False return (app, local url) at once."""
    session = Session(root, out or out_dir(root))
    app = build_app(session)
    app.queue(default_concurrency_limit=1, max_size=16)
    _, url, _ = app.launch(
        server_name=host, server_port=port, prevent_thread_lock=not block, quiet=not block,
        show_error=True, share=False, theme=theme(), css=CSS, ssr_mode=False, pwa=False,
        mcp_server=False, allowed_paths=[str(session.out)], footer_links=["api", "settings"],
    )  # fmt: skip
    return app, url
