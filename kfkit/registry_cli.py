"""``kfkit registry``: list, show, promote, roll back, verify and audit published versions; gc what crashes left."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from kfkit.errors import ConfigError, RegistryError

if TYPE_CHECKING:
    from kfkit.registry import ModelVersion, Registry

__all__ = ["add_parser", "run"]

_ACTIONS = ("list", "show", "promote", "rollback", "verify", "audit", "gc")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``kfkit registry ...`` on the top-level subcommand parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry-uri",
        metavar="URI",
        help="registry root, file://PATH or s3://BUCKET/PREFIX (default: registry.uri of the config)",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    registry = sub.add_parser(
        "registry",
        help="list, show, promote, roll back and verify published versions; gc what killed publishes left",
        description="Inspect and manage the model registry. The registry comes from --registry-uri or the "
        "config (registry.uri, registry.endpoint; e.g. `registry=s3` or registry.uri=s3://bucket/models). "
        "S3 credentials come from $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY; the endpoint from "
        "registry.endpoint or $AWS_ENDPOINT_URL. Every promote and rollback is written to the audit log "
        "(actor: $KFKIT_ACTOR, else user@host).",
        epilog="exit status: 0 ok, 1 a registry or verification failure, 2 a usage error (an invalid or "
        "unknown model, version or alias included)",
    )
    actions = registry.add_subparsers(dest="action", metavar="ACTION", required=True)
    operands = "operands and Hydra overrides (KEY=VALUE, e.g. registry=s3 registry.endpoint=http://…)"

    def action(name: str, help_text: str, usage_args: str, description: str = "") -> argparse.ArgumentParser:
        parser = actions.add_parser(
            name,
            help=help_text,
            description=description or help_text,
            parents=[common],
            usage=f"kfkit registry {name} {usage_args} [OVERRIDE ...] [--registry-uri URI] " "[--json]",
        )
        parser.add_argument("args", nargs="*", metavar="ARG", help=operands)
        return parser

    action("list", "list models, or the versions of one model with their aliases and metrics", "[NAME]")
    action("show", "show one version: storage URI, files and digests, metrics, lineage, gate", "NAME [VERSION|ALIAS]")
    promote = action("promote", "point an alias (default production) at a version", "NAME VERSION|ALIAS")
    promote.add_argument("--alias", help="alias to move (default: registry.promote_to, else production)")
    promote.add_argument("--reason", default="", help="why, for the audit log")
    promote.add_argument("--no-verify", action="store_true", help="skip re-reading and checking every file first")
    rollback = action("rollback", "point an alias back at the version it had before the last promote", "NAME")
    rollback.add_argument("--alias", help="alias to roll back (default: registry.promote_to, else production)")
    rollback.add_argument("--reason", default="", help="why, for the audit log")
    action(
        "verify",
        "re-read every file of versions and check their sha256 (all versions by default)",
        "NAME [VERSION|ALIAS ...]",
    )
    action("audit", "print the audit log of a model (publish, promote, rollback)", "NAME")
    gc = action(
        "gc",
        "remove what killed publishes left behind (a dry run unless --yes)",
        "[NAME ...] [--yes] [--grace SECONDS]",
        "Find what killed publishes left behind, and with --yes remove it: staging folders (file://), version "
        "claims with their uploaded objects (s3://), models with no committed version. Without --yes only print "
        "it. Committed versions, aliases and the audit log are never touched, nor anything a running publish "
        "holds: a file:// publish holds a lock on its staging folder; an s3:// publish's claim names its "
        "process (checked on the same host) and is refreshed while it uploads (trusted for 10 minutes after "
        "its last refresh when gc cannot check the process). The numbers of dead publishers on this host are "
        "freed; those gc cannot check keep their claim as a tombstone, so a stalled publisher never collides "
        "with a new one.",
    )
    gc.add_argument("--yes", action="store_true", help="remove them (default: only print what would be removed)")
    gc.add_argument(
        "--grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="leave alone what a publisher touched fewer than SECONDS ago (default 3600)",
    )


def run(args: argparse.Namespace) -> int:
    """Carry out one ``kfkit registry`` action; returns the exit status."""
    operands = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    registry, default_alias = _open(args.registry_uri, overrides)
    handler = {
        "list": _list,
        "show": _show,
        "promote": _promote,
        "rollback": _rollback,
        "verify": _verify,
        "audit": _audit,
        "gc": _gc,
    }[args.action]
    return handler(registry, operands, args, default_alias)


def _open(uri: str | None, overrides: list[str]) -> tuple[Registry, str]:
    from kfkit.config import compose
    from kfkit.registry import DEFAULT_ALIAS, open_registry

    cfg = compose(overrides).registry
    registry = open_registry(uri or cfg.uri, endpoint=cfg.endpoint, region=cfg.region)
    return registry, cfg.promote_to or DEFAULT_ALIAS


def _operands(operands: list[str], action: str, least: int, most: int | None, usage: str) -> list[str]:
    if len(operands) < least or (most is not None and len(operands) > most):
        raise ConfigError(f"kfkit registry {action} takes {usage}; got {operands or 'nothing'}")
    return operands


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header, *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _metric(version: ModelVersion, key: str) -> str:
    value = version.metadata.get("metrics", {}).get(key)
    return f"{value:.4f}" if isinstance(value, int | float) else ""


def _list(registry: Registry, operands: list[str], args: argparse.Namespace, _alias: str) -> int:
    (name,) = _operands(operands, "list", 0, 1, "[NAME]") or [None]
    if name is None:
        models = []
        for model in registry.models():
            versions = registry.versions(model)
            models.append(
                {
                    "name": model,
                    "versions": len(versions),
                    "latest": versions[-1].version if versions else None,
                    "aliases": registry.aliases(model),
                }
            )
        text = _table(
            ["MODEL", "VERSIONS", "LATEST", "ALIASES"],
            [[m["name"], m["versions"], m["latest"], _aliases(m["aliases"])] for m in models],
        )
        _emit(args, {"registry": registry.uri, "models": models}, f"registry {registry.uri}\n{text}")
        return 0
    versions = registry.versions(name)
    if not versions and name not in registry.models():
        from kfkit.errors import VersionNotFound

        raise VersionNotFound(f"no model {name!r} in {registry.uri} (models: {', '.join(registry.models()) or 'none'})")
    aliases = registry.aliases(name)
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    rows = [
        [
            v.version,
            v.created_at[:19].replace("T", " "),
            ",".join(by_version.get(v.version, [])),
            _metric(v, "roc_auc"),
            _metric(v, "pr_auc"),
            _metric(v, "f1"),
            f"{v.metadata['threshold']:.4f}" if isinstance(v.metadata.get("threshold"), float) else "",
            v.metadata.get("run_id", ""),
        ]
        for v in versions
    ]
    data = {
        "registry": registry.uri,
        "model": name,
        "aliases": aliases,
        "versions": [_version_dict(v, by_version.get(v.version, [])) for v in versions],
    }
    text = _table(["VERSION", "CREATED (UTC)", "ALIASES", "ROC_AUC", "PR_AUC", "F1", "THRESHOLD", "RUN"], rows)
    _emit(args, data, f"{name} in {registry.uri}\n{text}")
    return 0


def _aliases(aliases: dict[str, str]) -> str:
    return ", ".join(f"{a}={v}" for a, v in aliases.items())


def _version_dict(version: ModelVersion, aliases: list[str]) -> dict[str, Any]:
    return {
        "version": version.version,
        "uri": version.uri,
        "created_at": version.created_at,
        "aliases": aliases,
        "metrics": version.metadata.get("metrics", {}),
        "threshold": version.metadata.get("threshold"),
        "run_id": version.metadata.get("run_id", ""),
    }


def _show(registry: Registry, operands: list[str], args: argparse.Namespace, default_alias: str) -> int:
    name, *rest = _operands(operands, "show", 1, 2, "NAME [VERSION|ALIAS]")
    if rest:
        ref = rest[0]
    else:  # the alias runs promote to, else the newest version
        aliases = registry.aliases(name)
        versions = registry.versions(name)
        ref = aliases.get(default_alias) or (versions[-1].version if versions else "1")
    version = registry.get(name, ref)
    manifest = registry.manifest(name, version.version)
    aliases = [a for a, v in registry.aliases(name).items() if v == version.version]
    files = {
        rel: {"sha256": digest, "size": manifest.get("sizes", {}).get(rel)}
        for rel, digest in sorted(manifest["files"].items())
    }
    data = {**_version_dict(version, aliases), "name": name, "files": files, "metadata": version.metadata}
    meta = version.metadata
    lineage = meta.get("lineage") or {}
    code = lineage.get("code") or {}
    gate = meta.get("gate")
    lines = [
        f"{name} version {version.version}" + (f"  ({', '.join(aliases)})" if aliases else ""),
        f"  storage URI  {version.uri}",
        f"  created      {version.created_at}",
        "  metrics      " + "  ".join(f"{k} {v:.4f}" for k, v in meta.get("metrics", {}).items() if k != "rows"),
        f"  threshold    {meta.get('threshold', '')}",
    ]
    if lineage:
        lines += [
            f"  dataset      sha256 {lineage.get('dataset_sha256')}",
            f"  config       sha256 {lineage.get('config_sha256')}",
            f"  code         kfkit {code.get('kfkit', '')} {code.get('git_commit', '')}".rstrip(),
            f"  run          {lineage.get('pipeline_run_id') or meta.get('run_id', '')}",
        ]
    if gate:
        against = f" against version {gate['champion_version']}" if gate.get("champion_version") else ""
        lines.append(f"  gate         {'passed' if gate.get('passed') else 'failed'}{against}")
    lines += ["", _table(["FILE", "SIZE", "SHA256"], [[rel, f["size"], f["sha256"][:16]] for rel, f in files.items()])]
    lines += ["", f"serve it:  kfkit serve --model-uri {version.uri}"]
    _emit(args, data, "\n".join(lines))
    return 0


def _promote(registry: Registry, operands: list[str], args: argparse.Namespace, default_alias: str) -> int:
    name, ref = _operands(operands, "promote", 2, 2, "NAME VERSION|ALIAS")
    event = registry.promote(
        name, ref, alias=args.alias or default_alias, reason=args.reason, verify=not args.no_verify
    )
    was = f" (was {event.from_version})" if event.from_version else ""
    _emit(args, event.to_dict(), f"{name} {event.alias} -> version {event.to_version}{was}, by {event.actor}")
    return 0


def _rollback(registry: Registry, operands: list[str], args: argparse.Namespace, default_alias: str) -> int:
    (name,) = _operands(operands, "rollback", 1, 1, "NAME")
    event = registry.rollback(name, alias=args.alias or default_alias, reason=args.reason)
    _emit(
        args,
        event.to_dict(),
        f"{name} {event.alias} -> version {event.to_version} (rolled back from {event.from_version}), by {event.actor}",
    )
    return 0


def _verify(registry: Registry, operands: list[str], args: argparse.Namespace, _alias: str) -> int:
    name, *refs = _operands(operands, "verify", 1, None, "NAME [VERSION|ALIAS ...]")
    versions = [registry.resolve_ref(name, r) for r in refs] or [v.version for v in registry.versions(name)]
    if not versions:
        from kfkit.errors import VersionNotFound

        raise VersionNotFound(f"{name} has no published versions in {registry.uri}")
    results = []
    for version in versions:
        try:
            manifest = registry.verify(name, version)
            results.append({"version": version, "ok": True, "files": len(manifest["files"]), "error": None})
        except RegistryError as e:
            results.append({"version": version, "ok": False, "files": None, "error": str(e)})
    text = _table(
        ["VERSION", "RESULT", "DETAIL"],
        [
            [
                r["version"],
                "ok" if r["ok"] else "FAILED",
                f"{r['files']} files, sha256 match" if r["ok"] else r["error"],
            ]
            for r in results
        ],
    )
    _emit(args, {"model": name, "registry": registry.uri, "results": results}, text)
    if failed := [r["version"] for r in results if not r["ok"]]:
        print(
            f"kfkit registry verify: {len(failed)} of {len(results)} versions of {name} failed: "
            f"{', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    return 0


def _audit(registry: Registry, operands: list[str], args: argparse.Namespace, _alias: str) -> int:
    (name,) = _operands(operands, "audit", 1, 1, "NAME")
    events = registry.audit(name)
    rows = [
        [e.time[:23].replace("T", " "), e.actor, e.action, e.alias, e.from_version, e.to_version, e.reason]
        for e in events
    ]
    text = _table(["TIME (UTC)", "ACTOR", "ACTION", "ALIAS", "FROM", "TO", "REASON"], rows)
    _emit(args, [e.to_dict() for e in events], text)
    return 0


def _gc(registry: Registry, operands: list[str], args: argparse.Namespace, _alias: str) -> int:
    from kfkit.registry.base import GC_GRACE_S

    grace = GC_GRACE_S if args.grace is None else args.grace
    items = registry.gc(grace_s=grace, remove=args.yes, names=operands or None)
    garbage = [i for i in items if i.action == "remove"]
    verb = "removed" if args.yes else "would remove"
    rows = [
        [
            (verb if i.done or not args.yes else "kept") if i.action == "remove" else "kept",
            i.kind,
            i.model,
            i.version,
            _size(i.size),
            f"{i.age_s:.0f}s",
            i.target,
            i.reason,
        ]
        for i in items
    ]
    text = _table(["ACTION", "KIND", "MODEL", "VERSION", "SIZE", "AGE", "WHAT", "WHY"], rows) if rows else ""
    if not garbage:
        summary = f"nothing to remove in {registry.uri} (grace {grace:g} s)"
    elif args.yes:
        summary = (
            f"removed {sum(i.done for i in garbage)} of {len(garbage)} items, {_size(sum(i.size for i in garbage))}"
        )
    else:
        summary = f"dry run: {len(garbage)} items, {_size(sum(i.size for i in garbage))}; run with --yes to remove them"
    data = {"registry": registry.uri, "grace_s": grace, "removed": args.yes, "items": [i.to_dict() for i in items]}
    _emit(args, data, f"{text}\n{summary}" if text else summary)
    return 0


def _size(size: float) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
