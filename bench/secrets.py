"""Credentials never shown or stored: redaction of URLs, database passwords from the environment or a file.

valley holds two kinds of secret:

* the **W&B API key**, which only wandb itself reads (``WANDB_API_KEY`` or ``~/.netrc`` after ``wandb login``):
  no config key, command-line override, Parquet column, log line or W&B config of valley ever holds it;
* **database passwords** in ``tuning.storage`` (``postgresql://user:PASSWORD@host/db``). A password need not be on
  the command line: :func:`storage_url` fills it in, only where the storage is opened, from

  1. ``$VALLEY_STORAGE_PASSWORD``,
  2. a file named by the URL's ``password_file=PATH`` query parameter (``postgresql://u@h/db?password_file=~/.pg``;
     the parameter is removed before the URL reaches the driver),
  3. libpq's own ``$PGPASSWORD`` / ``$PGPASSFILE`` / ``~/.pgpass``, which psycopg reads itself (nothing to do here).

  A password typed on the command line anyway is moved out of it before Hydra sees it (:func:`scrub_argv`: into
  ``$VALLEY_STORAGE_PASSWORD`` of this process and its workers), so it reaches no ``.hydra`` file, progress line
  or error message; every URL that is printed or stored goes through :func:`redact`.

:func:`check_storage_reachable` turns an unreachable or misconfigured storage into one line before a sweep starts.
"""
from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

PASSWORD_ENV = "VALLEY_STORAGE_PASSWORD"
MASK = "***"

# scheme://user:password@host — the password is everything between the first ':' after '//' and the last '@' of
# the authority (passwords may contain '@' or ':' when they are not percent-encoded).
_URL_AUTH = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*\\*://[^\s:/@'\"\\]*\\*:)(?P<pw>[^\s'\"]*?)(?P<at>@)"
                       r"(?=[^\s@'\"]*(?:[\s'\",\]]|$))")
# password=... in query strings and libpq keyword strings (password=secret host=...), and Hydra's escaped form.
_KEYWORD = re.compile(r"(?P<key>\b(?:password|passwd|pwd)\s*=\s*)(?P<pw>'[^']*'|\"[^\"]*\"|[^\s&,;'\"\]]+)",
                      re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every URL password replaced by ``***`` (``user:***@host``), ``password=…`` parameters masked,
    and the current ``$VALLEY_STORAGE_PASSWORD`` value masked wherever it appears literally."""
    if not text:
        return text
    out = _URL_AUTH.sub(lambda m: m.group("head") + (MASK if m.group("pw") else "") + m.group("at"), str(text))
    out = _KEYWORD.sub(lambda m: m.group("key") + MASK, out)
    secret = os.environ.get(PASSWORD_ENV)
    if secret and len(secret) >= 4:
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            out = out.replace(form, MASK)
    return out


def is_database_url(storage: str) -> bool:
    return "://" in storage


def _split_password(url: str) -> tuple[str, str | None]:
    """(url without its password, the password or None) for a database URL."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    auth, _, hostport = parts.netloc.rpartition("@")
    if ":" not in auth:
        return url, None
    user, _, password = auth.partition(":")
    netloc = f"{user}@{hostport}" if user else hostport
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), unquote(password)


def storage_url(raw: str) -> str:
    """The URL to hand to the database driver: ``raw`` with its password filled in from ``$VALLEY_STORAGE_PASSWORD``
    or ``password_file=PATH`` (see the module docstring). Never print or store the result; show ``redact(raw)``.

    Journal-file paths and URLs that already hold a password are returned unchanged (apart from removing a
    ``password_file`` parameter). Raises ``ValueError`` (one line, no secret) when the password file is unreadable.
    """
    if not is_database_url(raw):
        return raw
    parts = urlsplit(raw)
    if parts.scheme.split("+", 1)[0].lower() == "sqlite":
        return raw  # a file: no credentials
    query = parse_qsl(parts.query, keep_blank_values=True)
    files = [v for k, v in query if k == "password_file"]
    rest = [(k, v) for k, v in query if k != "password_file"]
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))
    _, inline = _split_password(url)
    if inline is not None:
        return url
    password = None
    if files:
        path = Path(files[-1]).expanduser()
        try:
            password = path.read_text().strip("\r\n")
        except OSError as err:
            raise ValueError(f"tuning.storage: cannot read password_file {path} ({err.strerror or err})") from None
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    if password is None:
        return url  # libpq: PGPASSWORD / PGPASSFILE / ~/.pgpass, or no password at all
    parts = urlsplit(url)
    user, _, hostport = parts.netloc.rpartition("@")
    if not user:
        import getpass

        user = os.environ.get("PGUSER") or getpass.getuser()
    netloc = f"{user}:{quote(password, safe='')}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def scrub_argv(argv: list[str], *, warn: bool = True) -> list[str]:
    """The command line with any password removed from ``tuning.storage=…`` overrides (Hydra then never sees it:
    no ``.hydra`` file, no "Error executing job with overrides" line holds it). The password moves into
    ``$VALLEY_STORAGE_PASSWORD`` of this process (workers inherit it), where :func:`storage_url` finds it.

    Prints one warning line (the password is still visible to ``ps`` and in the shell history). Raises
    ``ValueError`` when a sweep over storages carries different passwords (one variable cannot hold them).
    """
    out, found = [], set()
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.lstrip("+~") != "tuning.storage" or "://" not in value:
            out.append(arg)
            continue
        # Hydra's escaped form (\: \= \,) as well as the plain one; a sweep is comma-separated.
        pieces = re.split(r"(?<!\\),", value)
        cleaned = []
        for piece in pieces:
            quote_char = piece[0] if len(piece) > 1 and piece[0] == piece[-1] and piece[0] in "'\"" else ""
            inner = piece[1:-1] if quote_char else piece
            plain = inner.replace("\\:", ":").replace("\\=", "=").replace("\\,", ",")
            bare, password = _split_password(plain)
            if password is None:
                cleaned.append(piece)
                continue
            found.add(password)
            cleaned.append(f"{quote_char}{bare}{quote_char}" if quote_char else bare)
        out.append(f"{key}={','.join(cleaned)}")
    if len(found) > 1:
        raise ValueError("tuning.storage: a sweep over storages with different passwords is not supported; "
                         f"set ${PASSWORD_ENV} or use password_file= per storage")
    if found:
        os.environ[PASSWORD_ENV] = found.pop()
        if warn:
            print(f"valley: warning: a database password on the command line is visible to other users (ps, shell "
                  f"history); it was removed from the job's config. Prefer ${PASSWORD_ENV}, password_file= or "
                  "~/.pgpass", file=sys.stderr)
    return out


_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306}


def check_storage_reachable(url: str, timeout_s: float = 5.0) -> str | None:
    """One line saying why the Optuna storage ``url`` cannot be used (redacted), or None when it can.

    Journal files: the directory must be creatable and writable. SQLite: its directory must exist or be creatable.
    Database servers: a TCP connection within ``timeout_s``, then a real connection (authentication, database)
    within the same timeout. Never raises; never prints a traceback.
    """
    try:
        if not is_database_url(url):
            return _check_directory(Path(url).expanduser().resolve().parent, f"journal {redact(url)}")
        parts = urlsplit(url)
        scheme = parts.scheme.split("+", 1)[0].lower()
        if scheme == "sqlite":
            path = parts.path[1:] if parts.path.startswith("/") else parts.path
            if not path or path == ":memory:":
                return None
            return _check_directory(Path(path).expanduser().resolve().parent, f"sqlite database {redact(url)}")
        host = parts.hostname or "localhost"
        try:
            port = parts.port or _DEFAULT_PORTS.get(scheme)
        except ValueError:
            return f"tuning.storage {redact(url)}: invalid port"
        if port is not None and not host.startswith("/"):
            try:
                with socket.create_connection((host, port), timeout=timeout_s):
                    pass
            except OSError as err:
                reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__)
                return f"tuning.storage {redact(url)}: cannot reach {host}:{port} ({reason}) within {timeout_s:g} s"
        return _check_connect(storage_url(url), url, scheme, timeout_s)
    except ValueError as err:
        return redact(" ".join(str(err).split()))
    except Exception as err:  # noqa: BLE001 - one line, whatever went wrong
        return f"tuning.storage {redact(url)}: {type(err).__name__}: {redact(_first_line(err))}"


def _check_directory(directory: Path, what: str) -> str | None:
    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        return f"{what}: {probe} is not a writable directory"
    return None


def _check_connect(url: str, shown: str, scheme: str, timeout_s: float) -> str | None:
    import importlib.util

    if scheme in ("postgresql", "postgres") and "+" not in urlsplit(url).scheme:
        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        import sqlalchemy
    except ImportError:
        return None  # Optuna will say what is missing
    connect_args = {"connect_timeout": max(1, int(round(timeout_s)))} if scheme.startswith(("postgres", "mysql")) \
        else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as err:
        return f"tuning.storage {redact(shown)}: the database driver is not installed ({err.name})"
    except Exception as err:  # noqa: BLE001
        return f"tuning.storage {redact(shown)}: cannot connect: {redact(_first_line(getattr(err, 'orig', None) or err))}"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return " ".join(line.split())[:300]
