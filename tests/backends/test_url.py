"""Backend URLs: parsing, options, and redaction of every credential."""

from __future__ import annotations

import pytest
from returns.result import Failure, Success

from gomaster.backends import connect, parse_backend
from gomaster.backends.url import host_list, parse_url, redact


def test_the_password_is_redacted_everywhere() -> None:
    parsed = parse_url("mysql://app:s3cret@db:3306/app?table=locks").unwrap()
    assert parsed.password == "s3cret"
    assert "s3cret" not in parsed.redacted
    assert "s3cret" not in repr(parsed)
    assert "s3cret" not in str(parsed)
    assert parsed.redacted == "mysql://app:***@db:3306/app?table=locks"


def test_secret_query_options_are_redacted() -> None:
    url = "mongodb://h/db?tlsCertificateKeyFilePassword=pw1&authMechanismProperties=AWS_SESSION_TOKEN:tok&w=1"
    shown = redact(url)
    assert "pw1" not in shown and "tok" not in shown
    assert "w=1" in shown


def test_a_mongodb_seed_list_parses() -> None:
    parsed = parse_url("mongodb://u:p@a:1,b:2/db?replicaSet=rs").unwrap()
    assert parsed.host == "a:1,b:2"
    assert parsed.port is None
    assert parsed.option("replicaSet") == "rs"


def test_plus_signs_in_options_are_kept() -> None:
    assert parse_url("redis://h/0?prefix=a+b").unwrap().option("prefix") == "a+b"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense", "scheme://"),
        ("mysql://h:notaport/db", "cannot parse"),
        ("cassandra://h/db", "unknown backend scheme"),
        ("sqlite:///x.db?table=bad;name", "not allowed"),
        ("sqlite://host/x.db", "no host"),
    ],
)
def test_bad_urls_fail_with_a_message_that_says_what_to_fix(url: str, message: str) -> None:
    outcome = parse_backend(url)
    assert isinstance(outcome, Failure)
    assert message in outcome.failure()
    with pytest.raises(ValueError, match=message):
        connect(url)


@pytest.mark.parametrize("port", ["99999", "65536", "0", "4294967296"])
def test_a_port_out_of_range_names_the_range_without_calling_it_not_a_number(port: str) -> None:
    outcome = parse_url(f"mysql://app:secret@db:{port}/app")
    assert outcome == Failure("cannot parse backend URL: the port must be a number from 1 to 65535")


def test_text_where_the_port_goes_is_likely_a_password_and_is_never_echoed() -> None:
    outcome = parse_url("mysql://app:hunter/2@db:3306/app")
    assert isinstance(outcome, Failure)
    assert "port must be a number from 1 to 65535" in outcome.failure()
    assert "percent-encode" in outcome.failure()
    assert "hunter" not in outcome.failure()


def test_an_unbalanced_bracket_asks_for_percent_encoding_and_blames_no_port() -> None:
    outcome = parse_url("mysql://app:hunter[2@db:3306/app")
    assert isinstance(outcome, Failure)
    assert "percent-encode" in outcome.failure() and "[ as %5B" in outcome.failure()
    assert "port" not in outcome.failure() and "hunter" not in outcome.failure()


@pytest.mark.parametrize("port", ["1", "65535"])
def test_the_ends_of_the_port_range_are_accepted(port: str) -> None:
    assert parse_url(f"mysql://app:secret@db:{port}/app").unwrap().port == int(port)


def test_sqlite_urls_follow_the_sqlalchemy_convention(tmp_path: object) -> None:
    relative = parse_backend("sqlite:///locks.db")
    assert isinstance(relative, Success)
    assert relative.unwrap().url == "sqlite:///locks.db"
    absolute = connect("sqlite:////tmp/gomaster-url-test.db")
    assert absolute.url == "sqlite:////tmp/gomaster-url-test.db"


def test_scrubbing_replaces_a_delimited_secret_but_never_mangles_words() -> None:
    from gomaster.backends.url import scrub

    assert scrub("access denied for 'app'@'h' (using password: y) on MySQL", "y") == (
        "access denied for 'app'@'h' (using password: ***) on MySQL"
    )
    assert scrub("mysql://app:hunter2@db/app failed", "hunter2") == "mysql://app:***@db/app failed"
    assert scrub("nothing to hide", None, "") == "nothing to hide"


def test_an_unencoded_password_is_not_echoed_by_a_parse_error() -> None:
    with pytest.raises(ValueError, match="percent-encode") as caught:
        connect("mysql://root:p4ss/w0rd@db/x")
    assert "p4ss" not in str(caught.value) and "w0rd" not in str(caught.value)


def test_a_list_of_hosts_splits_into_hosts_and_ports_with_ipv6_unbracketed() -> None:
    assert host_list("db1:3306,db2,[::1]:3307,[fe80::1]") == (
        ("db1", "3306"),
        ("db2", ""),
        ("::1", "3307"),
        ("fe80::1", ""),
    )
