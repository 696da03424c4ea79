"""``pacs user`` and ``pacs token``: accounts and API tokens from the command line.

* ``pacs user add NAME --role ROLE [--institution NAME]... [--password-stdin]``
* ``pacs user passwd NAME [--password-stdin]``
* ``pacs user disable NAME`` / ``pacs user enable NAME``
* ``pacs user list``
* ``pacs token create NAME [--scope read|write|admin]... [--days N] [--label TEXT]``:
  prints the new token once
* ``pacs token list [NAME]`` / ``pacs token revoke ID``

A password is asked twice on the terminal, or read from standard input with
``--password-stdin`` (one line, for scripts); it is never an argument, where ``ps`` and the
shell history would show it. Every change is audited (actor: the operating-system user).

:func:`ensure_first_admin` runs at ``pacs serve``: an archive without any account gets an
``admin`` with a generated password, printed once.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from collections.abc import Callable
from datetime import timedelta

from pacs.accounts import ROLES, SCOPES, AccountError
from pacs.audit import Action, ActorKind, AuditEvent, Outcome
from pacs.config import Settings
from pacs.services import Services, open_services

FIRST_ADMIN = "admin"


def add_commands(commands: argparse._SubParsersAction,  # type: ignore[type-arg]
                 storage_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``user`` and ``token`` on the ``pacs`` parser."""
    user = commands.add_parser("user", help="user accounts: add, passwd, disable, enable, list")
    actions = user.add_subparsers(required=True, metavar="ACTION")
    add = actions.add_parser("add", help="create a user")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--institution", action="append", default=[],
                     help="limit a clinician to this institution (repeatable)")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from standard input")
    add.set_defaults(command=cmd_user_add)
    passwd = actions.add_parser("passwd", help="set a user's password")
    passwd.add_argument("username")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(command=cmd_user_passwd)
    for name, disabled in (("disable", True), ("enable", False)):
        sub = actions.add_parser(name, help=f"{name} a user")
        sub.add_argument("username")
        sub.set_defaults(command=cmd_user_disable, disabled=disabled)
    listing = actions.add_parser("list", help="list users")
    listing.set_defaults(command=cmd_user_list)

    token = commands.add_parser("token", help="API tokens: create, list, revoke")
    token_actions = token.add_subparsers(required=True, metavar="ACTION")
    create = token_actions.add_parser("create", help="create a token and print it once")
    create.add_argument("username")
    create.add_argument("--scope", action="append", choices=SCOPES,
                        help="what the token may do (repeatable; default read)")
    create.add_argument("--days", type=float, help="expires after this many days")
    create.add_argument("--label", default="", help="what the token is for")
    create.set_defaults(command=cmd_token_create)
    tokens = token_actions.add_parser("list", help="list tokens")
    tokens.add_argument("username", nargs="?")
    tokens.set_defaults(command=cmd_token_list)
    revoke = token_actions.add_parser("revoke", help="revoke a token")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(command=cmd_token_revoke)
    for actions_of in (actions, token_actions):
        for leaf in actions_of.choices.values():
            storage_options(leaf)


def ensure_first_admin(services: Services) -> None:
    """Create an ``admin`` with a generated password, printed once, if no account exists."""
    if services.accounts.has_users():
        return
    password = secrets.token_urlsafe(12)
    services.accounts.add_user(FIRST_ADMIN, password, "admin")
    _audit(services, f"first user {FIRST_ADMIN} created at start")
    print(f"pacs: no accounts yet: created user '{FIRST_ADMIN}' with password {password}\n"
          f"pacs: (shown only now; sign in at /login and change it, or run "
          f"`pacs user passwd {FIRST_ADMIN}`)", flush=True)


def cmd_user_add(settings: Settings, args: argparse.Namespace) -> int:
    return _run(settings, lambda services: _add(services, args))


def _add(services: Services, args: argparse.Namespace) -> str:
    password = _password(args.password_stdin)
    user = services.accounts.add_user(args.username, password, args.role, args.institution)
    return f"user {user.username} created with role {user.role}"


def cmd_user_passwd(settings: Settings, args: argparse.Namespace) -> int:
    def change(services: Services) -> str:
        services.accounts.set_password(args.username, _password(args.password_stdin))
        return f"password of {args.username} changed"

    return _run(settings, change)


def cmd_user_disable(settings: Settings, args: argparse.Namespace) -> int:
    def change(services: Services) -> str:
        services.accounts.update_user(args.username, disabled=args.disabled)
        return f"user {args.username} {'disabled' if args.disabled else 'enabled'}"

    return _run(settings, change)


def cmd_user_list(settings: Settings, _args: argparse.Namespace) -> int:
    def listing(services: Services) -> list[str]:
        return [f"{user.username}\t{user.role}\t{'disabled' if user.disabled else 'active'}"
                f"\t{', '.join(user.institutions) or 'all institutions'}"
                for user in services.accounts.users()]

    return _run(settings, listing)


def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    scopes = args.scope or ["read"]

    def create(services: Services) -> tuple[str, str]:
        token = services.accounts.create_token(
            args.username, scopes=scopes, label=args.label,
            lifetime=timedelta(days=args.days) if args.days else None)
        return token, f"token created for {args.username} ({' '.join(scopes)})"

    return _run(settings, create)


def cmd_token_list(settings: Settings, args: argparse.Namespace) -> int:
    def listing(services: Services) -> list[str]:
        return [f"{token.pk}\t{token.username}\t{' '.join(token.scopes)}\t"
                + ("revoked" if token.revoked_at else f"expires {token.expires_at:%Y-%m-%d}"
                   if token.expires_at else "no expiry") + f"\t{token.label}"
                for token in services.accounts.tokens(args.username)]

    return _run(settings, listing)


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    def revoke(services: Services) -> str:
        services.accounts.revoke_token(args.id)
        return f"token {args.id} revoked"

    return _run(settings, revoke)


def _run(settings: Settings,
         command: Callable[[Services], str | tuple[str, str] | list[str]]) -> int:
    """Run ``command`` on the archive's services and print what it gives back.

    A text is printed and audited; a pair is printed (the first: a new token) and audited
    (the second); a list of lines (a listing) is printed only.
    """
    services = open_services(settings)
    try:
        done = command(services)
        if isinstance(done, str):
            done = (done, done)
        if isinstance(done, tuple):
            _audit(services, done[1])
    except AccountError as exc:
        print(f"pacs: {exc}", file=sys.stderr)
        return 2
    finally:
        services.close()
    print(done[0] if isinstance(done, tuple) else "\n".join(done) or "(none)")
    return 0


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise AccountError("the two passwords differ")
    return first


def _audit(services: Services, detail: str) -> None:
    services.audit.record(AuditEvent(Action.ADMIN, Outcome.SUCCESS, ActorKind.CLI,
                                     actor=os_user(), protocol="cli", detail=detail))


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
