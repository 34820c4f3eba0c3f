"""`difflab sample --from-png IMG --image INIT`: an edit (SDEdit, RePaint, an image-conditional
model's input) re-made from the settings a PNG carries and the image it started from."""

from __future__ import annotations

from pathlib import Path

from difflab.core.errors import UsageError


def remake_edit(args, ckpt: str, chosen: dict, given: dict, meta: dict, out: Path) -> int:
    """Write the edited image(s) of `meta` again, as the UI wrote them, into out/images."""
    from difflab.core.imageio import load_image, save_images
    from difflab.inference.pipeline import load
    from difflab.inference.remake import remake

    if len(args.image) != 1:
        raise UsageError(
            f"give the one image the edit started from with --image (got {len(args.image)})"
        )
    c, h, _ = meta["edit"]["init_shape"]
    init = load_image(Path(args.image[0]), c, h)  # fitted as the web UI fits an upload
    pipe = load(ckpt, allow_pickle=args.allow_pickle)
    images = remake(pipe, meta, init, **chosen, **given).numpy()
    index = int(meta.get("index", 0)) if len(images) == 1 else 0
    metas = [meta] if len(images) == 1 else None
    paths = save_images(images, out / "images", index, metas)
    kind = meta["edit"]["kind"]
    print(f"re-made {kind} of {args.image[0]}: {len(paths)} PNG(s) in {out / 'images'}")
    return 0
