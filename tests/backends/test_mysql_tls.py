"""TLS on MySQL/MariaDB verifies the server's certificate chain and host name unless the URL opts
out by name, proven against a MariaDB that presents a certificate made here for ``localhost``.

One server for the whole module (a start costs about 2 s); the certificates are made with the
``openssl`` command, which every machine that runs the suite has (Debian's PostgreSQL packages
depend on it).
"""

from __future__ import annotations

import pickle
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pymysql
import pytest
from returns.result import Failure

from gomaster.backends import LockBackend, connect
from gomaster.backends.mysql import MySQLBackend
from gomaster.backends.url import parse_url
from gomaster.core.decide import plan_acquire
from gomaster.core.errors import BackendError
from gomaster.core.record import LockRecord
from gomaster.core.timing import Timing
from tests.helpers import err, identity, ok
from tests.servers.mysql import TEST_DATABASE, MariaDBServer

pytestmark = pytest.mark.mysql

TIMEOUT = 5.0
TTL = 30.0
SECRET = "Sup3r-Secret-Pw"
KEY_SECRET = "k3y-Secret-Pw"
#: The certificates are only needed while this module runs.
DAYS = "2"


@dataclass(frozen=True)
class Certificates:
    """A CA, the server's certificate for ``localhost`` that it signed, a second unrelated CA,
    and a client certificate whose key is encrypted with ``KEY_SECRET``."""

    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@dataclass(frozen=True)
class TLSServer:
    server: MariaDBServer
    certs: Certificates

    def url(self, host: str = "localhost", password: str | None = None, **query: str) -> str:
        """A URL for root on this server, by ``host``, with these query parameters."""
        auth = f"root:{password}" if password else "root"
        tail = urlencode({"create_db": "true", **query})
        return f"mysql://{auth}@{host}:{self.server.port}/{TEST_DATABASE}?{tail}"


def _openssl(directory: Path, *args: str) -> None:
    command = shutil.which("openssl")
    if command is None:
        raise RuntimeError("these tests make their certificates with the openssl command: install openssl")
    done = subprocess.run([command, *args], cwd=directory, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{done.stderr}")


def _make_ca(directory: Path, stem: str) -> None:
    _openssl(
        directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{stem}.key", "-out", f"{stem}.pem", "-days", DAYS, "-subj", f"/CN=gomaster test {stem}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def _make_leaf(directory: Path, stem: str, subject: str, extensions: str, *key_options: str) -> None:
    (directory / f"{stem}.ext").write_text(extensions)
    _openssl(
        directory, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        *key_options, "-keyout", f"{stem}.key", "-out", f"{stem}.csr", "-subj", subject,
    )  # fmt: skip
    _openssl(
        directory, "x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{stem}.pem", "-days", DAYS, "-extfile", f"{stem}.ext",
    )  # fmt: skip


def make_certificates(directory: Path) -> Certificates:
    """Make the CAs and certificates in ``directory`` (a few ms each, elliptic-curve keys)."""
    _make_ca(directory, "ca")
    _make_ca(directory, "other-ca")
    _make_leaf(
        directory,
        "server",
        "/CN=localhost",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n",
        "-nodes",
    )
    _make_leaf(
        directory,
        "client",
        "/CN=gomaster test client",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        "-passout",
        f"pass:{KEY_SECRET}",
    )
    return Certificates(
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )


@pytest.fixture(scope="module")
def tls_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    """A throwaway MariaDB that offers TLS with a certificate for ``localhost`` signed by ``certs.ca``."""
    certs = make_certificates(tmp_path_factory.mktemp("certs"))
    tls = [f"--ssl-ca={certs.ca}", f"--ssl-cert={certs.server_cert}", f"--ssl-key={certs.server_key}"]
    with MariaDBServer(extra_args=tls) as server:
        yield TLSServer(server, certs)


def _acquire(backend: LockBackend, name: str) -> LockRecord:
    seen = ok(backend.observe(name, TIMEOUT))
    planned = plan_acquire(seen, name, identity(), Timing.from_ttl(TTL))
    assert not isinstance(planned, Failure), planned
    return ok(backend.claim(planned.unwrap(), TIMEOUT))


def _encrypted(backend: LockBackend) -> bool:
    """Whether the backend's current connection runs over TLS."""
    conn: Any = getattr(backend, "_conn", None)
    return conn is not None and isinstance(conn._sock, ssl.SSLSocket)


def _refusal(backend: LockBackend) -> str:
    """The message of a refused connection, checked to be one line that shows no password."""
    error = err(backend.observe("x", TIMEOUT))
    assert isinstance(error, BackendError), error
    shown = str(error)
    assert "\n" not in shown, shown
    assert SECRET not in shown, shown
    assert SECRET not in repr(error), repr(error)
    return error.message


# -- what verification accepts --------------------------------------------------------------


def test_the_right_ca_and_host_name_connect_and_a_lock_can_be_claimed(tls_mariadb: TLSServer) -> None:
    backend = connect(tls_mariadb.url(ssl_ca=str(tls_mariadb.certs.ca)))
    record = _acquire(backend, "verified")
    assert record.token == 1
    assert _encrypted(backend)
    backend.close()


def test_ssl_verify_identity_false_accepts_a_trusted_certificate_reached_by_ip_address(
    tls_mariadb: TLSServer,
) -> None:
    url = tls_mariadb.url("127.0.0.1", ssl_ca=str(tls_mariadb.certs.ca), ssl_verify_identity="false")
    backend = connect(url)
    assert _acquire(backend, "by-address").holder
    assert _encrypted(backend)
    backend.close()


def test_ssl_verify_cert_false_accepts_a_certificate_no_given_ca_signed(tls_mariadb: TLSServer) -> None:
    backend = connect(tls_mariadb.url(ssl_ca=str(tls_mariadb.certs.other_ca), ssl_verify_cert="false"))
    assert _acquire(backend, "unverified").holder
    assert _encrypted(backend)
    backend.close()


def test_ssl_verify_cert_false_alone_still_asks_for_tls(tls_mariadb: TLSServer) -> None:
    backend = connect(tls_mariadb.url("127.0.0.1", ssl_verify_cert="false"))
    ok(backend.observe("x", TIMEOUT))
    assert _encrypted(backend)
    backend.close()


def test_a_client_certificate_with_an_encrypted_key_is_presented(tls_mariadb: TLSServer) -> None:
    certs = tls_mariadb.certs
    admin = pymysql.connect(host="127.0.0.1", port=tls_mariadb.server.port, user="root", autocommit=True)
    with admin.cursor() as cursor:
        cursor.execute("CREATE USER IF NOT EXISTS 'gm_x509'@'%' REQUIRE X509")
        cursor.execute("GRANT ALL ON *.* TO 'gm_x509'@'%'")
    admin.close()
    base = f"mysql://gm_x509@localhost:{tls_mariadb.server.port}/{TEST_DATABASE}?create_db=true"
    without = connect(f"{base}&ssl_ca={certs.ca}")
    assert "access denied" in _refusal(without).lower()
    client = f"&ssl_cert={certs.client_cert}&ssl_key={certs.client_key}&ssl_key_password={KEY_SECRET}"
    backend = connect(f"{base}&ssl_ca={certs.ca}{client}")
    ok(backend.observe("x", TIMEOUT))
    assert KEY_SECRET not in backend.url
    backend.close()


def test_reconnects_reuse_the_verifying_tls_context(
    tls_mariadb: TLSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = pymysql.connect(host="127.0.0.1", port=tls_mariadb.server.port, user="root", autocommit=True)
    made: list[object] = []
    original = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(kwargs.get("cafile"))
        return original(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    backend = connect(tls_mariadb.url(ssl_ca=str(tls_mariadb.certs.ca)))
    record = _acquire(backend, "reused")
    for _ in range(3):
        with admin.cursor() as cursor:
            cursor.execute(f"KILL {backend._conn.thread_id()}")  # type: ignore[attr-defined]
        assert ok(backend.observe("reused", TIMEOUT)).record == record
    admin.close()
    assert made == [str(tls_mariadb.certs.ca)], made
    backend.close()


# -- what verification refuses --------------------------------------------------------------


def test_a_certificate_the_given_ca_did_not_sign_is_refused(tls_mariadb: TLSServer) -> None:
    other = str(tls_mariadb.certs.other_ca)
    backend = connect(tls_mariadb.url(password=SECRET, ssl_ca=other))
    for each in (backend, pickle.loads(pickle.dumps(backend))):
        message = _refusal(each)
        assert "not trusted" in message, message
        assert f"ssl_ca={other}" in message, message
        assert "ssl_verify_cert=false" in message, message
        assert not _encrypted(each)
        each.close()


def test_ssl_true_without_ssl_ca_verifies_against_the_system_ca_store(tls_mariadb: TLSServer) -> None:
    message = _refusal(connect(tls_mariadb.url(password=SECRET, ssl="true")))
    assert "not trusted" in message, message
    assert "system" in message, message
    assert "ssl_ca" in message, message


def test_a_host_name_the_certificate_does_not_name_is_refused(tls_mariadb: TLSServer) -> None:
    backend = connect(tls_mariadb.url("127.0.0.1", password=SECRET, ssl_ca=str(tls_mariadb.certs.ca)))
    message = _refusal(backend)
    assert "host name mismatch" in message, message
    assert "'127.0.0.1'" in message, message
    assert "ssl_verify_identity=false" in message, message


def test_keywords_verify_as_the_url_does(tls_mariadb: TLSServer) -> None:
    common: dict[str, Any] = {"port": tls_mariadb.server.port, "user": "root", "database": TEST_DATABASE}
    wrong = MySQLBackend(host="localhost", password=SECRET, ssl_ca=tls_mariadb.certs.other_ca, **common)
    assert "not trusted" in _refusal(wrong)
    right = MySQLBackend(host="localhost", ssl_ca=tls_mariadb.certs.ca, create_db=True, **common)
    ok(right.observe("x", TIMEOUT))
    assert _encrypted(right)
    right.close()
    go_dsn = f"root:{SECRET}@tcp(localhost:{tls_mariadb.server.port})/{TEST_DATABASE}?tls=true"
    assert "system" in _refusal(MySQLBackend(dsn=go_dsn))


def test_tls_asked_of_a_server_that_does_not_offer_it_is_refused_before_the_password_goes(
    mysql_url: str,
) -> None:
    """Against the suite's shared server, which is started without TLS (see SERVERS.md)."""
    parts = parse_url(mysql_url).unwrap()
    admin = pymysql.connect(
        host=parts.host, port=parts.port or 3306, user=parts.username, password=parts.password or ""
    )
    with admin.cursor() as cursor:
        cursor.execute("SELECT @@have_ssl")
        offered = cursor.fetchone()
    admin.close()
    assert offered != ("YES",), (
        f"the shared server {parts.redacted} offers TLS; this test needs one that does not"
    )
    where = f"{parts.host}:{parts.port or 3306}"
    url = f"mysql://{parts.username or 'root'}:{SECRET}@{where}/db?ssl_verify_cert=false"
    message = _refusal(connect(url))
    assert "does not offer TLS" in message, message


# -- settings, refused before connecting ----------------------------------------------------


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ({"ssl_verify_cert": "false", "ssl_verify_identity": "true"}, "ssl_verify_identity=true needs"),
        ({"ssl_disabled": "true", "ssl_ca": "/etc/hosts"}, "ssl_disabled=true turns TLS off, but ssl_ca"),
        ({"ssl": "false", "ssl_verify_cert": "false"}, "ssl=false turns TLS off, but ssl_verify_cert"),
        ({"ssl": "sometimes"}, "ssl='sometimes' is not a boolean"),
        ({"ssl_ca": "/nonexistent/ca.pem"}, "ssl_ca: /nonexistent/ca.pem does not exist"),
        ({"ssl_key": "/etc/hosts"}, "ssl_key needs ssl_cert"),
    ],
)
def test_contradictory_or_missing_tls_settings_are_refused_before_connecting(
    query: dict[str, str], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint) as caught:
        connect(f"mysql://root:{SECRET}@db.invalid/gomaster?{urlencode(query)}")
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("go_tls", "shown"),
    [
        ("true", "?ssl=true"),
        ("skip-verify", "?ssl_verify_cert=false"),
        ("false", "?ssl_disabled=true"),
        ("preferred", "/db"),
    ],
)
def test_go_dsn_tls_values_map_to_the_ssl_options(go_tls: str, shown: str) -> None:
    backend = MySQLBackend(dsn=f"u:{SECRET}@tcp(db.invalid:3306)/db?tls={go_tls}")
    assert backend.url.endswith(shown), backend.url


def test_a_go_dsn_tls_config_name_is_refused_with_the_values_that_work() -> None:
    with pytest.raises(ValueError, match="tls='custom': use tls=true"):
        MySQLBackend(dsn="u@tcp(db.invalid:3306)/db?tls=custom")


def test_the_tls_options_show_in_the_url_without_the_key_password(tls_mariadb: TLSServer) -> None:
    certs = tls_mariadb.certs
    backend = MySQLBackend(
        host="localhost",
        ssl_ca=certs.ca,
        ssl_cert=certs.client_cert,
        ssl_key=certs.client_key,
        ssl_key_password=KEY_SECRET,
        ssl_verify_identity=False,
    )
    shown = (backend.url, repr(backend), repr(backend._settings))
    for text in shown:
        assert KEY_SECRET not in text, text
    assert f"ssl_ca={certs.ca}" in backend.url
    assert "ssl_key_password=***" in backend.url
    assert backend.url.endswith("ssl_verify_identity=false"), backend.url
