"""The mTLS gateway: Debian's nginx verifying client certificates in front of the SuperLink."""

import shutil
from pathlib import Path
from string import Template

from fedllm.errors import FedllmError

TEMPLATE = Path(__file__).with_name("nginx.conf.template")


class _AtTemplate(Template):
    delimiter = "@"


def nginx_binary() -> str:
    """Path of the nginx executable, or a one-line error saying how to install it."""
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(path).exists()),
        None,
    )
    if found is None:
        raise FedllmError("nginx not found: install it (Debian: apt-get install nginx-light)")
    return found


def render_config(state: Path, certs: Path, listen: str, upstream_port: int) -> Path:
    """Write the gateway's nginx.conf into `state` and return its path."""
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (state / "tmp" / temp).mkdir(parents=True, exist_ok=True)
    crl = certs / "ca.crl"
    if not crl.is_file():
        raise FedllmError(f"{crl}: file not found (certs/crl.sh publishes one)")
    text = _AtTemplate(TEMPLATE.read_text()).substitute(
        state=state, certs=certs, crl=crl, listen=listen, upstream_port=upstream_port
    )
    config = state / "nginx.conf"
    config.write_text(text)
    return config


def nginx_command(config: Path) -> list[str]:
    """nginx in the foreground with our config, prefix and startup error log.

    `-e` keeps nginx from opening /var/log/nginx before it reads the config, which a
    non-root user or a read-only root filesystem does not allow.
    """
    prefix = config.parent
    error_log = str(prefix / "gateway-error.log")
    return [
        nginx_binary(),
        "-c",
        str(config),
        "-p",
        str(prefix),
        "-e",
        error_log,
        "-g",
        "daemon off;",
    ]
