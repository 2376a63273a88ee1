"""``edgewatch model keys init | publish | revoke | fetch``: signed model updates (TUF).

Registered under ``edgewatch model`` in :mod:`agent.cli.app`; the library is
:mod:`models.updates` (docs/updates.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent.cli._common import console, emit_json, invocation
from agent.errors import ConfigError

keys_app = typer.Typer(help="Signing keys of a model update repository.", no_args_is_help=True)

_EXPIRES = typer.Option(
    "--expires-days", min=1, help="Days the targets and snapshot metadata stay valid."
)
_TIMESTAMP = typer.Option(
    "--timestamp-days",
    min=1,
    help="Days the timestamp stays valid: a repository not re-signed within it is "
    "refused by gateways as frozen.",
)
_REPO = typer.Option("--repo", help="Repository URL (file:///path).")
_KEYS = typer.Option("--keys", help="Keys folder from `edgewatch model keys init`.")


@keys_app.command("init")
def keys_init(
    keys_dir: Annotated[Path, typer.Argument(help="New folder for the four role keys.")],
) -> None:
    """Create ed25519 keys for the root, targets, snapshot and timestamp roles.

    root.key is the offline key: move it off this machine after this command (publish
    and revoke do not need it). root.json is the trust anchor to install on gateways
    (updates.trusted_root).
    """
    from models.updates.repository import init_keys

    root_json = init_keys(keys_dir)
    console.print(f"keys written to {keys_dir} (mode 0600)")
    console.print(f"trusted root for gateways: {root_json}")
    console.print(
        f"move {keys_dir / 'root.key'} to offline storage now; it is needed only to replace keys"
    )


def publish(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .tar.gz to publish.")],
    repo: Annotated[str, _REPO],
    keys: Annotated[Path, _KEYS],
    expires_days: Annotated[int, _EXPIRES] = 90,
    timestamp_days: Annotated[int, _TIMESTAMP] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Sign a verified bundle into a TUF repository as the newest version."""
    from models.updates.repository import publish as publish_bundle

    done = publish_bundle(
        bundle, repo, keys, expires_days=expires_days, timestamp_days=timestamp_days
    )
    if as_json:
        emit_json(
            {
                "version": done.version,
                "target": done.target_path,
                "sequence": done.sequence,
                "targets_version": done.targets_version,
                "expires": done.expires.isoformat(),
            }
        )
        return
    console.print(
        f"published {done.version} as {done.target_path} (sequence {done.sequence}, "
        f"metadata valid until {done.expires:%Y-%m-%d})"
    )


def revoke(
    version: Annotated[str, typer.Argument(help="Version to revoke (name@hex).")],
    repo: Annotated[str, _REPO],
    keys: Annotated[Path, _KEYS],
    expires_days: Annotated[int, _EXPIRES] = 90,
    timestamp_days: Annotated[int, _TIMESTAMP] = 7,
) -> None:
    """Mark a published version revoked: gateways never take it as an update."""
    from models.updates.repository import revoke as revoke_version

    done = revoke_version(
        version, repo, keys, expires_days=expires_days, timestamp_days=timestamp_days
    )
    console.print(f"revoked {done.version} ({done.target_path})")


def fetch(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Bundle name to follow.")] = "pump",
    current: Annotated[
        str | None,
        typer.Option("--current", help="Version running now: only a newer one is fetched."),
    ] = None,
    repo: Annotated[
        str | None, typer.Option("--repo", help="Repository URL (default: updates.repo).")
    ] = None,
    trusted_root: Annotated[
        Path | None,
        typer.Option("--trusted-root", help="Trusted root.json (default: updates.trusted_root)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Fetch, verify and stage the newest update (the running agent is not changed).

    Exit 0 with the staged folder, or with "no newer version"; 1 when refused.
    """
    from models.updates.client import fetch_update

    settings = invocation(ctx).settings()
    repo = repo or settings.updates.repo
    trusted_root = trusted_root or settings.updates.trusted_root
    if repo is None or trusted_root is None:
        raise ConfigError(["updates.repo and updates.trusted_root (or --repo, --trusted-root)"])
    cache = settings.updates_cache_dir
    staged = fetch_update(
        repo, trusted_root, cache, cache / "staged", name=name, current_version=current
    )
    if as_json:
        emit_json(
            None
            if staged is None
            else {"version": staged.version, "path": str(staged.path), "sequence": staged.sequence}
        )
        return
    if staged is None:
        console.print(f"no version of {name} newer than {current or 'none'} in {repo}")
        return
    console.print(f"staged {staged.version} (sequence {staged.sequence}) in {staged.path}")
