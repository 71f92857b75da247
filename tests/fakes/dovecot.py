"""A REAL IMAP server for the tests: Debian's dovecot, started unprivileged with a throw-away config.

Not a fake: the connector talks to dovecot's own IMAP implementation (UIDs, UIDVALIDITY, flags,
MOVE, SEARCH SINCE). The server listens on a random free port on 127.0.0.1, allows plaintext login
on loopback only, authenticates users from a passwd-file and keeps mail as maildirs in a temporary
folder. Run as root (CI containers), it drops to ``nobody``; otherwise it runs as the current user.
``make imap-server`` installs dovecot; without it, the IMAP tests skip and say why.
"""

from __future__ import annotations

import grp
import imaplib
import ipaddress
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DOVECOT_CANDIDATES = ("dovecot", "/usr/sbin/dovecot")


def find_dovecot() -> str | None:
    """Path of the dovecot binary, or None when it is not installed."""
    for name in DOVECOT_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ImapServer:
    """A running dovecot instance and helpers to put mail in it."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]
    uid: int
    gid: int
    host: str = "127.0.0.1"
    users: dict[str, str] = field(default_factory=dict)
    # The CA (here: the self-signed certificate itself) a client must trust for STARTTLS.
    ca_file: Path | None = None

    def add_users(self, names: list[str], password_of: Any) -> None:
        """Write the passwd-file before the first login (dovecot caches it once read)."""
        for name in names:
            self.users[name] = password_of(name)
        passwd = self.root / "passwd"
        passwd.write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items()))
        os.chown(passwd, self.uid, self.gid)

    def connect(self, user: str) -> imaplib.IMAP4:
        """A logged-in imaplib client (for delivering and inspecting mail in tests)."""
        client = imaplib.IMAP4(self.host, self.port, timeout=10)
        client.login(user, self.users[user])
        return client

    def append(
        self, user: str, message: bytes, folder: str = "INBOX", when: datetime | None = None
    ) -> None:
        """Deliver one raw RFC 5322 message with IMAP APPEND."""
        client = self.connect(user)
        try:
            stamp = imaplib.Time2Internaldate(when.timestamp()) if when else None
            typ, data = client.append(folder, "", stamp, message)
            assert typ == "OK", data
        finally:
            client.logout()

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, str]:
        """UID -> FLAGS string of every message in a folder."""
        client = self.connect(user)
        try:
            client.select(folder, readonly=True)
            _typ, data = client.uid("FETCH", "1:*", "(FLAGS)")
            out: dict[int, str] = {}
            for item in data:
                if not isinstance(item, bytes):
                    continue
                text = item.decode()
                uid = int(text.split("UID ")[1].split()[0].rstrip(")"))
                out[uid] = text.split("FLAGS (")[1].split(")")[0]
            return out
        finally:
            client.logout()

    def count(self, user: str, folder: str) -> int:
        """Messages in a folder."""
        client = self.connect(user)
        try:
            typ, data = client.select(folder, readonly=True)
            return int(data[0] or 0) if typ == "OK" else -1
        finally:
            client.logout()

    def stop(self) -> None:
        """Stop dovecot and remove its files."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _self_signed_cert(root: Path) -> tuple[Path, Path]:
    """Write a certificate and key for 127.0.0.1 / localhost, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = root / "cert.pem", root / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def start_dovecot(binary: str) -> ImapServer:
    """Start dovecot on a random loopback port and wait until it greets.

    Raises:
        RuntimeError: With dovecot's log when it does not come up.
    """
    as_root = os.geteuid() == 0
    if as_root:
        # Dovecot refuses to run its login processes as root; a CI container runs tests as root.
        user = pwd.getpwnam("nobody")
        uid, gid = user.pw_uid, user.pw_gid
        group = grp.getgrgid(gid).gr_name
        name = "nobody"
    else:
        uid, gid = os.getuid(), os.getgid()
        name = pwd.getpwuid(uid).pw_name
        group = grp.getgrgid(gid).gr_name
    # Not pytest's tmp_path: its parents are private to root, and dovecot runs as nobody.
    root = Path(tempfile.mkdtemp(prefix="triage-imap-"))
    (root / "run").mkdir()
    (root / "mail").mkdir()
    (root / "passwd").write_text("")
    port = _free_port()
    cert, key = _self_signed_cert(root)
    conf = root / "dovecot.conf"
    conf.write_text(
        f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/run
instance_name = triage-test-{port}
default_internal_user = {name}
default_internal_group = {group}
default_login_user = {name}
# STARTTLS is offered with a throw-away certificate for 127.0.0.1; plaintext login stays allowed
# because the server only listens on loopback.
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
# Tests log in with a wrong password on purpose: no 2-second punishment per failure.
auth_failure_delay = 0
log_path = {root}/dovecot.log
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
"""
    )
    for dirpath, _dirs, files in os.walk(root):
        os.chown(dirpath, uid, gid)
        for f in files:
            os.chown(os.path.join(dirpath, f), uid, gid)
    os.chmod(root, 0o755)
    process = subprocess.Popen(
        [binary, "-F", "-c", str(conf)],
        user=uid if as_root else None,
        group=gid if as_root else None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = ImapServer(root=root, port=port, process=process, uid=uid, gid=gid, ca_file=cert)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(100).startswith(b"* OK"):
                    return server
        except OSError:
            time.sleep(0.1)
    log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
    err = process.stderr.read().decode() if process.poll() is not None and process.stderr else ""
    server.stop()
    raise RuntimeError(f"dovecot did not start: {err}\n{log}")
