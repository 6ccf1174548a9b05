"""The registry's short Markdown card of one version (`registry.model_card`); the full model
card with lineage, gates and audit trail is `mj.model_card` (loop/card.py)."""

from __future__ import annotations


def model_card(
    name: str, version: int | None = None, stage: str | None = None, alias: str | None = None
) -> str:
    """A short Markdown card of one version: stage, source run, metrics, metadata and the
    privacy guarantee when one was recorded."""
    from . import model_version

    info = model_version(name, version, stage, alias)
    lines = [
        f"# {info['name']} v{info['version']}",
        "",
        f"- stage: {info['stage']}"
        + (f" (aliases: {', '.join(info['aliases'])})" if info["aliases"] else ""),
        f"- flavor: {info['flavor']}, {info['size']} bytes, sha256 {info['digest'][:12]}",
        f"- run: {info['run_id'] or '-'}; registered by {info['created_by']}",
    ]
    if info["metrics"]:
        lines += ["", "## Metrics", ""] + [f"- {k}: {v:.6g}" for k, v in info["metrics"].items()]
    meta = dict(info["meta"].get("metadata") or {})
    g = meta.pop("privacy", None)
    lines += ["", "## Privacy", ""]
    if g:
        lines.append(
            f"- (epsilon={g.get('epsilon', float('nan')):.4g}, delta={g.get('delta')})-DP "
            f"for each training example, {g.get('accountant')} accountant, {g.get('steps')} "
            f"steps (noise multiplier {g.get('noise_multiplier')}, max grad norm "
            f"{g.get('max_grad_norm')}, sample rate {g.get('sample_rate')})"
        )
    else:
        lines.append("- no differential-privacy guarantee recorded")
    if meta:
        lines += ["", "## Metadata", ""] + [f"- {k}: {v}" for k, v in meta.items()]
    return "\n".join(lines) + "\n"
