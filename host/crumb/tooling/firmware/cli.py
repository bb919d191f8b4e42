"""`crumb firmware build|deploy`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ...extras import require

_app_option = click.option(
    "--app", "app_dir", type=click.Path(file_okay=False, exists=True),
    help="Application folder: boot.py, main.py, its modules, config.example.json, boards/*.toml "
         "(default: firmware/ of the crumb checkout).")


def _app(app_dir: str | None) -> Path:
    from .bundle import repo_app

    if app_dir:
        return Path(app_dir)
    app = repo_app()
    if app is None:
        raise click.UsageError("no application folder: pass --app DIR (crumb runs from an installed package, "
                               "not a checkout with firmware/)")
    return app


@click.group("firmware")
def firmware_group() -> None:
    """Build firmware bundles for boards and deploy them over the REPL (mpremote)."""


@firmware_group.command("build")
@click.option("--board", "boards", multiple=True, metavar="BOARD",
              help="A board of APP/boards/ (repeatable; default: every one).")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default: APP/build).")
@click.option("--target-version", metavar="X.Y[.Z]",
              help="The MicroPython release on the boards, instead of each board file's `micropython`.")
@click.option("--emit", type=click.Choice(["bytecode", "native"]), default="bytecode", show_default=True,
              help="bytecode runs on any CPU; native is compiled for the board's (its march).")
@_app_option
def build_cmd(boards: tuple[str, ...], out: str | None, target_version: str | None, emit: str,
              app_dir: str | None) -> None:
    """Build one bundle per board: ucrumb and the application compiled to .mpy, boot.py, main.py, the
    settings template and manifest.json (each file's size and SHA-256), with a size table.

    The same inputs give the same bytes. An mpy-cross whose output the board's MicroPython cannot load
    is refused, with the fix.
    """
    require("firmware", "crumb firmware build")
    from . import mpycompat
    from .bundle import MPY_BUDGET, FirmwareError, build, load_boards
    from .mpycross import MpyCrossError
    from .mpycross import version as mpy_cross_version

    app = _app(app_dir)
    try:
        known = load_boards(app)
        if target_version:
            mpycompat.parse_version(target_version)
        unknown = [b for b in boards if b not in known]
        if unknown:
            raise click.UsageError(f"unknown board {', '.join(unknown)} (known: {', '.join(known)})")
        dest = Path(out) if out else app / "build"
        over = False
        for key in boards or tuple(known):
            b = known[key]
            bundle = build(b, app, dest, micropython=target_version, emit=emit)
            click.echo(f"{key}: {b.name}, MicroPython {bundle.micropython}, {emit}"
                       f"{f' -march={b.march}' if emit == 'native' else ''} -> {bundle.dir}")
            for f in bundle.files:
                if f["path"].endswith(".mpy"):
                    click.echo(f"  {f['size']:7,d}  {f['path']}")
            extra = bundle.feature_total
            features = f" + features {', '.join(b.features)}: {extra:,d}" if b.features else ""
            click.echo(f"  {bundle.mpy_total:7,d}  .mpy total (budget {MPY_BUDGET:,d}{features})")
            over |= bundle.mpy_total - extra > MPY_BUDGET
    except (FirmwareError, MpyCrossError, ValueError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo(mpy_cross_version())
    if over:
        click.echo(f"warning: a bundle's .mpy exceeds the {MPY_BUDGET:,d}-byte budget", err=True)


@firmware_group.command("deploy")
@click.option("--port", required=True, help="The board's serial port, as mpremote names it (/dev/ttyACM0, COM3).")
@click.option("--device", "device_id", required=True, help="The device id: enrolled now, unless it is already.")
@click.option("--config", type=click.Path(dir_okay=False, exists=True),
              help="Settings to copy as config.json (template: config.example.json).")
@click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False, exists=True),
              help="A bundle from `crumb firmware build` (default: build one for the board's MicroPython).")
@click.option("--board", help="With no --bundle: the board file to build for (default: bytecode for any board).")
@click.option("--group", help="Policy group, if the device is enrolled now.")
@click.option("--data", "data_dir", envvar="CRUMB_DATA", default="crumb-data", show_default=True,
              type=click.Path(file_okay=False), help="Issuer data directory (or $CRUMB_DATA).")
@click.option("--url", help="Issuer URL for the credentials (default: the policy's [issuer] url).")
@click.option("--ca", type=click.Path(dir_okay=False), help="PEM file of the CA the device pins the issuer to.")
@_app_option
def deploy_cmd(port: str, device_id: str, config: str | None, bundle_dir: str | None, board: str | None,
               group: str | None, data_dir: str, url: str | None, ca: str | None, app_dir: str | None) -> None:
    """Enroll DEVICE (or load its credentials), copy the bundle, crumb.json and the settings to the
    board with mpremote, and check every file's SHA-256 on the board. Secrets are never printed."""
    require("firmware", "crumb firmware deploy")
    from ...issuer.cli import open_lifecycle
    from ...issuer.protocol import check_device_id
    from .bundle import FirmwareError, load_boards
    from .deploy import deploy

    try:
        check_device_id(device_id)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    app = Path(app_dir) if app_dir else None
    if app is None and bundle_dir is None:
        app = _app(None)
    life, _ = open_lifecycle(data_dir, None, url, ca)
    try:
        with life:
            target = load_boards(app)[board] if board and app is not None else None
            if board and target is None:
                raise click.UsageError("--board needs the application folder (--app) to read its board file")
            d = deploy(port, device_id, life, group=group, config=Path(config) if config else None,
                       bundle_dir=Path(bundle_dir) if bundle_dir else None, board=target, app=app,
                       say=lambda m: click.echo(m))
    except KeyError:
        raise click.UsageError(f"unknown board {board}") from None
    except FirmwareError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo(f"{'enrolled' if d.enrolled else 'credentials of enrolled'} {d.device}; copied "
               f"{len(d.copied)} files; all {len(d.checked)} match on the board (SHA-256)")
    if not d.config_on_board:
        click.echo("next: the board has no config.json: copy config.example.json, set wifi and service, then "
                   f"mpremote connect {port} fs cp config.json :config.json")
    click.echo(f"next: mpremote connect {port} reset   (boot.py joins the Wi-Fi, main.py starts the "
               f"application; `mpremote connect {port} repl` shows what it prints)")
