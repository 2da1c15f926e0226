"""``enclave keys generate`` and ``enclave token``: development keys and tokens.

``token`` takes issuer and audience from, in order: ``--issuer``/``--audience``; the
``[auth]`` section of ``--config``; or, when neither is given, the default config file
(``ENCLAVE_CONFIG`` or ``./enclave.toml``) if it exists. The ``kid`` is ``--kid``, else the
matching entry of ``jwks.json`` beside the key, else the key's thumbprint. Only the token is
printed on stdout, so ``TOKEN=$(enclave token ...)`` works.
"""

from __future__ import annotations

from pathlib import Path

import click

from enclave.config import default_config_path, load_config
from enclave.devkeys import generate_keys, kid_for, mint_token, parse_ttl
from enclave.errors import ConfigError
from enclave.models import ROLES


@click.group("keys")
def keys_group() -> None:
    """Development signing keys (production uses an identity provider's JWKS)."""


@keys_group.command("generate")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("keys"),
    show_default=True,
    help="Folder for private.pem, public.pem and jwks.json.",
)
@click.option("--kid", default=None, help="Key id (default: the key's RFC 7638 thumbprint).")
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
def generate_command(out_dir: Path, kid: str | None, force: bool) -> None:
    """Make an EC P-256 key pair and its JWKS."""
    try:
        paths = generate_keys(out_dir, kid, overwrite=force)
    except FileExistsError as exc:
        raise click.ClickException(f"{exc} (use --force to replace the keys)") from None
    click.echo(f"private key: {paths.private_pem} (keep it secret)")
    click.echo(f"public key:  {paths.public_pem}")
    click.echo(f"JWKS:        {paths.jwks_json} (point auth.jwks_file at it)")
    click.echo(f"kid:         {paths.kid}")


def _roles(_ctx: click.Context, _param: click.Parameter, value: str) -> list[str]:
    roles = [r.strip() for r in value.split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise click.BadParameter(f"unknown role(s) {', '.join(unknown)}; known: {', '.join(ROLES)}")
    return roles


def _ttl(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    try:
        return parse_ttl(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("token")
@click.option(
    "--key",
    "key_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=Path("keys/private.pem"),
    show_default=True,
    help="Private key (PEM) that signs the token.",
)
@click.option("--sub", required=True, help="Subject (the user name licences refer to).")
@click.option(
    "--roles",
    required=True,
    callback=_roles,
    help="Comma-separated roles: researcher, admin, auditor.",
)
@click.option("--ttl", default="1h", show_default=True, callback=_ttl, help="e.g. 900s, 30m, 1h")
@click.option("--issuer", default=None, help="`iss` claim (default: auth.issuer of the config).")
@click.option("--audience", default=None, help="`aud` claim (default: auth.audience).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="enclave.toml to read issuer and audience from.",
)
@click.option("--kid", default=None, help="Key id (default: from jwks.json beside the key).")
@click.option("--jti", default=None, help="Token id (default: random).")
def token_command(
    key_path: Path,
    sub: str,
    roles: list[str],
    ttl: int,
    issuer: str | None,
    audience: str | None,
    config_path: Path | None,
    kid: str | None,
    jti: str | None,
) -> None:
    """Print a signed development token."""
    if issuer is None or audience is None:
        path = config_path or default_config_path()
        if config_path is None and not path.is_file():
            raise click.UsageError(
                "give --issuer and --audience, or --config enclave.toml "
                f"(no config found at {path})"
            )
        try:
            auth = load_config(path).auth
        except ConfigError as exc:
            raise click.ClickException(f"cannot read {path}: {exc.detail}") from None
        issuer = issuer or auth.issuer
        audience = audience or auth.audience
    try:
        token = mint_token(
            key_path,
            sub=sub,
            roles=roles,
            issuer=issuer,
            audience=audience,
            ttl_s=ttl,
            kid=kid or kid_for(key_path),
            jti=jti,
        )
    except (ValueError, TypeError) as exc:
        raise click.ClickException(f"cannot sign with {key_path}: {exc}") from None
    click.echo(token)
