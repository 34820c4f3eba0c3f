"""Reference images for the guidance terms that take one (`ref=`, e.g. style/content guidance,
Liu et al. 2023): uploaded files are kept content-addressed under the output folder, so the
settings a PNG records name a file that stays, and given to the terms that name no `ref`."""

from __future__ import annotations

import hashlib
import inspect
import shutil
from pathlib import Path

from difflab.core.errors import UsageError
from difflab.guidance.chain import GUIDANCES, parse_guidance


def reference_terms() -> list[str]:
    """The registered guidance terms whose factory takes `ref`."""
    return [n for n in GUIDANCES.names() if "ref" in inspect.signature(GUIDANCES.get(n)).parameters]


def keep(path: str | Path, store: Path) -> Path:
    """A copy of `path` at store/<sha256[:16]><suffix> (made once)."""
    path = Path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    kept = store / f"{digest}{path.suffix.lower() or '.png'}"
    if not kept.exists():
        store.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, kept)
    return kept


def with_references(guidance: str, refs: list[str], store: Path) -> str:
    """`guidance` with the uploaded `refs` as `ref=` of its reference terms that name none, in
    order (one file for all, or one per term); refs without such a term are a UsageError."""
    if not refs:
        return guidance
    terms = reference_terms()
    specs = parse_guidance(guidance) if guidance.strip() else []
    open_terms = [s for s in specs if s["name"] in terms and "ref" not in s]
    if not open_terms:
        raise UsageError(
            "reference images were uploaded but no guidance term uses them; add one of "
            f"{', '.join(terms)} without ref= to the guidance chain (e.g. {terms[0]}:ckpt=E."
            "safetensors,scale=5), or remove the references"
        )
    if len(refs) not in (1, len(open_terms)):
        raise UsageError(
            f"{len(refs)} reference images for {len(open_terms)} reference terms; upload one "
            "for all or one per term"
        )
    for i, spec in enumerate(open_terms):
        spec["ref"] = str(keep(refs[i % len(refs)], store))
    return spec_text(specs)


def spec_text(specs: list[dict]) -> str:
    """[{"name": "cfg", "scale": "3"}] → 'cfg:scale=3' (parse_guidance's syntax)."""
    def one(s):
        opts = ",".join(f"{k}={v}" for k, v in s.items() if k != "name")
        return s["name"] + (f":{opts}" if opts else "")

    return "+".join(one(s) for s in specs)
