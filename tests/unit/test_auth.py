"""Signed URLs (auth.py): canonical message, known answers, expiry, malformed input, viewer tokens,
the settings that hold the secret and the ``sign`` command."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from urllib.parse import parse_qsl, urlsplit

import pytest

from iipsrv_py import auth, sign
from iipsrv_py.errors import SignatureError
from iipsrv_py.settings import Settings, SettingsError, from_environ

SECRET = "test-secret"
ON = Settings(auth_secret=SECRET)
NOW = 1_700_000_000
PATH = "/slides/a%2Fb.svs/thumbnail"


def hmac_hex(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def signed(path: str, query: str, secret: str = SECRET) -> str:
    return f"{query}&sig={hmac_hex(secret, path + '?' + auth.canonical_query(query))}"


def refusal(query: str, path: str = PATH, slide_id: str | None = None, now: float = NOW, method: str = "GET"):
    with pytest.raises(SignatureError) as caught:
        auth.authorize(ON, method, path, query, slide_id, now)
    return caught.value.status, caught.value.code


# -- canonical message --------------------------------------------------------------------------


def test_canonical_query_sorts_by_key_then_value_and_drops_sig():
    assert auth.canonical_query("b=2&a=2&sig=ff&a=1&exp=9") == "a=1&a=2&b=2&exp=9"


def test_canonical_query_keeps_duplicate_keys():
    assert auth.canonical_query("x=1&x=1&x=0") == "x=0&x=1&x=1"


def test_canonical_query_decodes_percent_escapes_and_plus():
    assert auth.canonical_query("name=a%2Fb&q=a+b&p=%2B&u=%C3%A9&%65xp=5") == "exp=5&name=a/b&p=+&q=a b&u=é"


def test_canonical_query_sorts_the_decoded_text():
    # %5A is "Z", which sorts before "a"; undecoded, "%" would sort first.
    assert auth.canonical_query("a=1&%5A=2") == "Z=2&a=1"


def test_canonical_query_names_without_value_and_empty_tokens():
    assert auth.canonical_query("&b&&a=&") == "a=&b="


def test_message_keeps_the_path_as_sent():
    assert auth.signing_message(PATH, "exp=5") == "/slides/a%2Fb.svs/thumbnail?exp=5"


def test_known_answer_vectors():
    query = "max_size=256&exp=1700000000"
    expected = hmac_hex(SECRET, "/slides/a%2Fb.svs/thumbnail?exp=1700000000&max_size=256")
    assert auth.signature(SECRET, PATH, query) == expected
    iip = "FIF=a+b.tif&WID=200&CVT=jpeg&exp=1700000000"
    assert auth.signature(SECRET, "/fcgi-bin/iipsrv.fcgi", iip) == hmac_hex(
        SECRET, "/fcgi-bin/iipsrv.fcgi?CVT=jpeg&FIF=a b.tif&WID=200&exp=1700000000"
    )
    assert auth.viewer_token(SECRET, "a/b.svs", 1700000000) == hmac_hex(SECRET, "viewer:a/b.svs:1700000000")


def test_literal_digests_computed_outside_python():
    # `printf '%s' MESSAGE | openssl dgst -sha256 -hmac test-secret`: no Python on either side.
    assert auth.signature(SECRET, PATH, "max_size=256&exp=1700000000") == (
        "1faafc9a7c5775f42b0279c0bbd2ba14b070a0fd76f8cbab305c1f2f27479443"
    )
    assert auth.viewer_token(SECRET, "a/b.svs", 1700000000) == (
        "844fc49496c2bceaccde54f9c592282b90ccd6b33ab212e39b67efc39f0b4462"
    )


# -- authorize ----------------------------------------------------------------------------------


def test_a_valid_signature_passes_in_any_parameter_order():
    query = signed(PATH, f"max_size=256&exp={NOW + 60}")
    auth.authorize(ON, "GET", PATH, query, None, NOW)
    reordered = "&".join(reversed(query.split("&")))
    auth.authorize(ON, "GET", PATH, reordered, None, NOW)
    head, sig = query.rsplit("sig=", 1)
    auth.authorize(ON, "GET", PATH, f"{head}sig={sig.upper()}", None, NOW)  # hex in either case


def test_comparison_is_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    auth.authorize(ON, "GET", PATH, signed(PATH, f"exp={NOW}"), None, NOW)
    assert len(calls) == 1


def test_auth_off_lets_everything_through():
    auth.authorize(Settings(), "GET", PATH, "", None, NOW)
    auth.authorize(Settings(), "GET", PATH, "sig=zz&exp=x&exp=y", None, NOW)


def test_health_is_exempt_for_get_and_head_only():
    auth.authorize(ON, "GET", "/health", "", None, NOW)
    auth.authorize(ON, "HEAD", "/health", "", None, NOW)
    assert refusal("", path="/health", method="POST") == (401, "missing_signature")
    assert refusal("", path="/health/x") == (401, "missing_signature")


def test_expiry_boundaries():
    query = signed(PATH, f"exp={NOW}")
    auth.authorize(ON, "GET", PATH, query, None, NOW)  # valid through its last second
    assert refusal(query, now=NOW + 0.5) == (401, "signature_expired")
    assert refusal(query, now=NOW + 1) == (401, "signature_expired")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", (401, "missing_signature")),
        (f"exp={NOW + 60}", (401, "missing_signature")),
        ("sig=" + "a" * 64, (401, "missing_expiry")),
        (f"exp={NOW + 60}&sig=" + "a" * 64, (401, "invalid_signature")),
        (f"exp={NOW + 60}&sig=" + "a" * 63, (400, "invalid_signature_format")),
        (f"exp={NOW + 60}&sig=" + "g" * 64, (400, "invalid_signature_format")),
        (f"exp={NOW + 60}&sig=", (400, "invalid_signature_format")),
        (f"exp={NOW + 60}&sig={'a' * 64}&sig={'a' * 64}", (400, "invalid_signature_format")),
        ("exp=soon&sig=" + "a" * 64, (400, "invalid_expiry_format")),
        ("exp=-5&sig=" + "a" * 64, (400, "invalid_expiry_format")),
        ("exp=1.5&sig=" + "a" * 64, (400, "invalid_expiry_format")),
        ("exp=&sig=" + "a" * 64, (400, "invalid_expiry_format")),
        ("exp=" + "9" * 40 + "&sig=" + "a" * 64, (400, "invalid_expiry_format")),
        (f"exp={NOW + 60}&exp={NOW + 60}&sig=" + "a" * 64, (400, "invalid_expiry_format")),
    ],
)
def test_refusals(query, expected):
    assert refusal(query) == expected


def test_a_duplicated_signature_is_malformed_even_when_valid():
    query = signed(PATH, f"exp={NOW + 60}")
    sig = query.rsplit("sig=", 1)[1]
    assert refusal(f"{query}&sig={sig}") == (400, "invalid_signature_format")


def test_tampering_is_refused():
    query = signed(PATH, f"max_size=256&exp={NOW + 60}")
    assert refusal(query, path="/slides/other.svs/thumbnail") == (401, "invalid_signature")
    assert refusal(query.replace("max_size=256", "max_size=2048")) == (401, "invalid_signature")
    assert refusal(query + "&extra=1") == (401, "invalid_signature")
    assert refusal(query.replace(f"exp={NOW + 60}", f"exp={NOW + 3600}")) == (401, "invalid_signature")
    assert refusal(signed(PATH, f"exp={NOW + 60}", secret="other")) == (401, "invalid_signature")


def test_the_path_is_signed_undecoded():
    query = signed(PATH, f"exp={NOW + 60}")
    assert refusal(query, path="/slides/a/b.svs/thumbnail") == (401, "invalid_signature")


# -- viewer tokens ------------------------------------------------------------------------------


def token_query(slide_id: str, exp: int) -> str:
    return f"exp={exp}&vt={auth.viewer_token(SECRET, slide_id, exp)}"


def test_a_viewer_token_opens_its_slide_only():
    query = token_query("a/b.svs", NOW + 60)
    auth.authorize(ON, "GET", "/tiles/a%2Fb.svs/0/0/0.jpg", query, "a/b.svs", NOW)
    assert refusal(query, path="/tiles/c.svs/0/0/0.jpg", slide_id="c.svs") == (401, "invalid_signature")


def test_a_viewer_token_is_no_signature_elsewhere():
    assert refusal(token_query("a.svs", NOW + 60), path="/fcgi-bin/iipsrv.fcgi") == (401, "missing_signature")


def test_a_viewer_token_expires():
    query = token_query("a.svs", NOW - 1)
    assert refusal(query, slide_id="a.svs") == (401, "signature_expired")
    # The token binds its exp: a later one is not accepted with an old token.
    old = auth.viewer_token(SECRET, "a.svs", NOW - 1)
    assert refusal(f"exp={NOW + 60}&vt={old}", slide_id="a.svs") == (401, "invalid_signature")


def test_a_malformed_viewer_token():
    assert refusal(f"exp={NOW + 60}&vt=xyz", slide_id="a.svs") == (400, "invalid_signature_format")


# -- query helpers ------------------------------------------------------------------------------


def test_strip_auth_params_keeps_the_rest_as_sent():
    assert (
        auth.strip_auth_params("FIF=a%20b.tif&exp=5&WID=200&sig=ab&vt=cd&CVT=jpeg") == "FIF=a%20b.tif&WID=200&CVT=jpeg"
    )
    assert auth.strip_auth_params("FIF=x.tif&%65xp=5&sig") == "FIF=x.tif"
    assert auth.strip_auth_params("FIF=x.tif&EXP=5") == "FIF=x.tif&EXP=5"  # names are case-sensitive
    assert auth.strip_auth_params("") == ""


@pytest.mark.parametrize("value", ["a b", "a+b", "a&b=c", "é/ü", "0,0,0.5,0.5", "%41"])
def test_signed_query_round_trips(value):
    query, sig = auth.signed_query(SECRET, PATH, [("FIF", value), ("WID", "200")], NOW + 60)
    assert query.endswith(f"&exp={NOW + 60}&sig={sig}")
    assert parse_qsl(query)[0] == ("FIF", value)
    auth.authorize(ON, "GET", PATH, query, None, NOW)


def test_signed_query_leaves_iip_arguments_readable():
    query, _ = auth.signed_query(SECRET, "/fcgi-bin/iipsrv.fcgi", [("RGN", "0,0,0.5,0.5"), ("CVT", "jpeg")], NOW)
    assert query.startswith("RGN=0,0,0.5,0.5&CVT=jpeg&exp=")


# -- settings -----------------------------------------------------------------------------------


def test_the_secret_never_shows_in_the_settings_repr():
    settings, _ = from_environ({"AUTH_SECRET": "hunter2-very-secret"})
    assert settings.auth_secret == "hunter2-very-secret"
    assert "hunter2" not in repr(settings)


def test_the_secret_does_not_change_the_fingerprint():
    assert from_environ({"AUTH_SECRET": "a"})[0].fingerprint == from_environ({})[0].fingerprint


def test_auth_secret_file(tmp_path):
    path = tmp_path / "secret"
    path.write_text("from-a-file\n")
    assert from_environ({"AUTH_SECRET_FILE": str(path)})[0].auth_secret == "from-a-file"
    with pytest.raises(SettingsError, match="both"):
        from_environ({"AUTH_SECRET_FILE": str(path), "AUTH_SECRET": "x"})
    with pytest.raises(SettingsError, match="AUTH_SECRET_FILE"):
        from_environ({"AUTH_SECRET_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SettingsError, match="empty"):
        from_environ({"AUTH_SECRET_FILE": str(tmp_path / "empty")})


# -- the sign command ---------------------------------------------------------------------------


def run_sign(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    status = sign.main(list(argv), env=env or {}, out=out)
    return status, out.getvalue()


def test_sign_prints_a_url_that_verifies():
    status, out = run_sign(
        "--path", "/fcgi-bin/iipsrv.fcgi", "--param", "FIF=a b.tif", "--param", "CVT=jpeg",
        "--base-url", "http://example.org/", env={"AUTH_SECRET": SECRET},
    )  # fmt: skip
    assert status == 0
    url = urlsplit(out.splitlines()[-1])
    assert (url.scheme, url.netloc, url.path) == ("http", "example.org", "/fcgi-bin/iipsrv.fcgi")
    assert url.query.startswith("FIF=a%20b.tif&CVT=jpeg&exp=")
    exp = int(dict(parse_qsl(url.query))["exp"])
    auth.authorize(ON, "GET", url.path, url.query, None, exp - 3600)


def test_sign_json_and_signature_formats():
    status, out = run_sign("--path", PATH, "--secret", SECRET, "--ttl", "60", "--format", "json")
    assert status == 0
    doc = json.loads(out.splitlines()[-1])
    assert set(doc) == {"url", "path", "exp", "sig"} and doc["path"] == PATH
    assert doc["sig"] == hmac_hex(SECRET, f"{PATH}?exp={doc['exp']}")
    assert doc["url"] == f"{PATH}?exp={doc['exp']}&sig={doc['sig']}"
    status, out = run_sign("--path", PATH, "--secret", SECRET, "--format", "signature")
    assert status == 0 and len(out.strip()) == 64


def test_sign_without_a_secret_exits_2():
    assert run_sign("--path", PATH)[0] == 2
