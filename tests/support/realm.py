"""Run the test OpenID provider in tests/idp and sign in to it like a user.

The provider (``tests/idp/realm.mjs``) is laid out like the Keycloak realm
``fastn``. These helpers start it as a Node.js subprocess, walk its login
page with plain HTTP requests, and run the authorization code flow with PKCE.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import queue
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import NoReturn
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import httpx

IDP_DIR = Path(__file__).resolve().parent.parent / "idp"
REALM_SCRIPT = IDP_DIR / "realm.mjs"

# The realm's only user, as defined in tests/idp/realm.mjs.
TEST_USERNAME = "alice"
TEST_PASSWORD = "alice-password"
TEST_USER_SUB = "7b6a3d2e-4c1f-4e8a-9b5d-2f0c8e1a6d34"
TEST_USER_EMAIL = "alice@example.test"

CLIENT_IDS = ("fastn-oauth", "fastn-sdk")
DEFAULT_SCOPE = "openid profile email"
# Never requested: the realm hands the code over by redirect, and
# browse_login stops before following it. Port 9 is the discard service.
DEFAULT_REDIRECT_URI = "http://127.0.0.1:9/callback"

STARTUP_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 5.0
HTTP_TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 20
STDERR_TAIL_LINES = 200
BODY_EXCERPT_CHARS = 300

# Query parameters whose values are credentials or request bindings and must
# not appear in assertion messages.
SENSITIVE_PARAMETERS = frozenset(
    {
        "access_token",
        "code",
        "code_challenge",
        "code_verifier",
        "id_token",
        "nonce",
        "password",
        "refresh_token",
        "session_state",
        "state",
    }
)


def endpoint_url(issuer: str, name: str) -> str:
    """Return the URL of a Keycloak OpenID Connect endpoint, such as "token"."""
    return f"{issuer}/protocol/openid-connect/{name}"


class RealmServer:
    """A running ``tests/idp/realm.mjs`` process on 127.0.0.1."""

    def __init__(self) -> None:
        self.issuer: str | None = None
        self.port: int | None = None
        self._process: subprocess.Popen[str] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._threads: list[threading.Thread] = []

    def start(self, access_token_ttl: int = 300, refresh_token_ttl: int = 1800, *, test_faults: bool = False) -> None:
        """Start the realm on a free port and wait until it accepts requests.

        Raises RuntimeError when Node.js or the npm dependencies are missing,
        or when the realm does not report its issuer within
        STARTUP_TIMEOUT_SECONDS.
        """
        if self._process is not None:
            raise RuntimeError(f"realm already running at {self.issuer}")

        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node not found on PATH: install Node.js 20 or later to run the test realm")
        if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(
                f"oidc-provider is not installed in {IDP_DIR / 'node_modules'}: run `npm ci --prefix tests/idp`"
            )

        command = [
            node,
            str(REALM_SCRIPT),
            "--port",
            "0",
            "--access-token-ttl",
            str(access_token_ttl),
            "--refresh-token-ttl",
            str(refresh_token_ttl),
            *(["--test-faults"] if test_faults else []),
        ]
        # stdin stays an open pipe: the realm exits when it closes, which
        # also happens when this Python process dies without calling stop().
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        first_line: queue.Queue[str] = queue.Queue(maxsize=1)
        self._threads = [
            threading.Thread(target=self._read_stdout, args=(first_line,), daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

        try:
            line = first_line.get(timeout=STARTUP_TIMEOUT_SECONDS)
        except queue.Empty:
            self._fail_start(f"realm did not report its issuer within {STARTUP_TIMEOUT_SECONDS:.0f} s")

        try:
            announcement = json.loads(line)
            self.issuer = str(announcement["issuer"])
            self.port = int(announcement["port"])
        except (ValueError, KeyError, TypeError):
            self._fail_start(
                f"realm wrote an invalid first stdout line {line!r}, expected a JSON object with issuer and port"
            )

    def stop(self) -> None:
        """Terminate the realm and wait for it to exit. Does nothing if it is not running."""
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        for thread in self._threads:
            thread.join(timeout=STOP_TIMEOUT_SECONDS)
        self._threads = []

    def fail_token_requests(self, status: int, count: int) -> None:
        """Make the next count token requests fail with status and no OAuth error body.

        Needs a realm started with test_faults=True.
        """
        self._control("/_test/token-faults", {"status": status, "count": count})

    def delay_token_requests(self, milliseconds: int, count: int) -> None:
        """Make the next count token requests wait milliseconds before the realm responds.

        Needs a realm started with test_faults=True.
        """
        self._control("/_test/token-delay", {"ms": milliseconds, "count": count})

    def _control(self, path: str, params: dict[str, int]) -> None:
        response = httpx.post(f"http://127.0.0.1:{self.port}{path}", params=params, timeout=HTTP_TIMEOUT_SECONDS)
        response.raise_for_status()

    def stderr_tail(self) -> str:
        """Return the last lines the realm wrote to stderr."""
        return "".join(self._stderr_tail)

    def __enter__(self) -> RealmServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _read_stdout(self, first_line: queue.Queue[str]) -> None:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        try:
            first_line.put(stdout.readline())
            # The realm writes nothing else to stdout, but a full pipe would
            # block it, so keep draining until it exits.
            for _ in stdout:
                pass
        except (OSError, ValueError):
            # stop() closed the pipe while this thread was reading it.
            pass

    def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        try:
            for line in self._process.stderr:
                self._stderr_tail.append(line)
        except (OSError, ValueError):
            pass

    def _fail_start(self, reason: str) -> NoReturn:
        exit_code = self._process.poll() if self._process is not None else None
        self.stop()
        status = "still running" if exit_code is None else f"exited with code {exit_code}"
        raise RuntimeError(f"{reason} (node process {status}); realm stderr:\n{self.stderr_tail()}")


@dataclass
class LoginForm:
    """The realm's login form: where it posts, its hidden fields and its buttons."""

    action: str
    hidden_fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)
    error_message: str = ""


class _LoginPageParser(HTMLParser):
    """Collect the first form with a password input, plus the page text."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self.text_parts: list[str] = []
        self.alert_parts: list[str] = []
        self._current: dict | None = None
        self._alert_tag: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._current = {"action": attributes.get("action", ""), "inputs": [], "buttons": []}
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None:
            self._current["inputs"].append(attributes)
        elif tag == "button" and self._current is not None:
            self._current["buttons"].append((attributes.get("name", ""), attributes.get("value", "")))
        if attributes.get("role") == "alert" and self._alert_tag is None:
            self._alert_tag = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None
        if tag == self._alert_tag:
            self._alert_tag = None

    def handle_data(self, data: str) -> None:
        self.text_parts.append(data)
        if self._alert_tag is not None:
            self.alert_parts.append(data)


def find_login_form(html: str, page_url: str) -> LoginForm | None:
    """Return the login form on a page, or None if the page has no password form.

    The action URL is resolved against page_url.
    """
    parser = _LoginPageParser()
    parser.feed(html)
    parser.close()
    for form in parser.forms:
        input_types = {attributes.get("type", "text") for attributes in form["inputs"]}
        if "password" not in input_types:
            continue
        hidden_fields = {
            attributes["name"]: attributes.get("value", "")
            for attributes in form["inputs"]
            if attributes.get("type") == "hidden" and attributes.get("name")
        }
        return LoginForm(
            action=urljoin(page_url, form["action"] or page_url),
            hidden_fields=hidden_fields,
            buttons=form["buttons"],
            error_message=" ".join("".join(parser.alert_parts).split()),
        )
    return None


def find_consent_form(html: str, page_url: str) -> LoginForm | None:
    """Return the proxy's consent form (approve and deny buttons), or None."""
    parser = _LoginPageParser()
    parser.feed(html)
    parser.close()
    for form in parser.forms:
        if ("action", "approve") not in form["buttons"]:
            continue
        hidden_fields = {
            attributes["name"]: attributes.get("value", "")
            for attributes in form["inputs"]
            if attributes.get("type") == "hidden" and attributes.get("name")
        }
        return LoginForm(
            action=urljoin(page_url, form["action"] or page_url), hidden_fields=hidden_fields, buttons=form["buttons"]
        )
    return None


def redact_url(url: str) -> str:
    """Return url with the values of SENSITIVE_PARAMETERS replaced by "***"."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = parse_qs(parts.query, keep_blank_values=True)
    redacted = {
        name: ["***" if name in SENSITIVE_PARAMETERS else value for value in values] for name, values in query.items()
    }
    return urlunsplit(parts._replace(query=urlencode(redacted, doseq=True)))


def _body_excerpt(response: httpx.Response) -> str:
    content_type = response.headers.get("content-type", "")
    if "html" in content_type:
        parser = _LoginPageParser()
        parser.feed(response.text)
        parser.close()
        text = " ".join("".join(parser.text_parts).split())
    elif "json" in content_type:
        # Token responses are JSON, so show only the error fields.
        try:
            body = response.json()
        except ValueError:
            return "(invalid JSON body)"
        if not isinstance(body, dict):
            return "(JSON body is not an object)"
        text = json.dumps({key: body[key] for key in ("error", "error_description") if key in body})
    else:
        text = f"({len(response.content)} bytes of {content_type or 'unknown content type'})"
    return text[:BODY_EXCERPT_CHARS]


def _describe(response: httpx.Response) -> str:
    return (
        f"HTTP {response.status_code} from {response.request.method} {redact_url(str(response.url))}: "
        f"{_body_excerpt(response)}"
    )


def browse_login(
    start_url: str,
    stop_at: str,
    *,
    username: str = TEST_USERNAME,
    password: str = TEST_PASSWORD,
    deny: bool = False,
    consent: str | None = "approve",
    client: httpx.Client | None = None,
) -> str:
    """Follow redirects from start_url like a browser and sign in at the realm.

    On the proxy's consent page it presses the button whose value is consent
    ("approve" or "deny"); with consent=None that page ends the walk.

    Each redirect is followed by hand, at most MAX_REDIRECTS requests in all.
    On the realm's login form it submits username and password, or presses
    the deny button when deny is true. Returns the first redirect target that
    starts with stop_at, without requesting it, which is the point where a
    browser hands over to a native app's loopback listener.

    Pass a client to share its cookie jar across calls. Raises AssertionError
    when the walk ends anywhere else, including a login form shown again
    after the credentials were submitted.
    """
    owns_client = client is None
    if client is None:
        client = httpx.Client(timeout=HTTP_TIMEOUT_SECONDS)
    try:
        return _walk(client, start_url, stop_at, username, password, deny, consent)
    finally:
        if owns_client:
            client.close()


def _walk(
    client: httpx.Client,
    start_url: str,
    stop_at: str,
    username: str,
    password: str,
    deny: bool,
    consent_answer: str | None,
) -> str:
    method = "GET"
    url = start_url
    form_data: dict[str, str] | None = None
    submitted = False

    for _ in range(MAX_REDIRECTS):
        response = client.request(method, url, data=form_data, follow_redirects=False)

        if response.is_redirect:
            target = urljoin(str(response.url), response.headers["location"])
            if target.startswith(stop_at):
                return target
            # 307 and 308 repeat the request, the other redirects turn it into a GET.
            if response.status_code not in (307, 308):
                method, form_data = "GET", None
            url = target
            continue

        consent = find_consent_form(response.text, str(response.url)) if response.status_code == 200 else None
        if consent is not None and consent_answer is not None:
            # The proxy's consent page comes before the realm's login form.
            form_data = {**consent.hidden_fields, "action": consent_answer}
            method, url, consent_answer = "POST", consent.action, None
            continue

        form = find_login_form(response.text, str(response.url)) if response.status_code == 200 else None
        if form is None:
            raise AssertionError(f"sign-in stopped before reaching {redact_url(stop_at)}: {_describe(response)}")
        if submitted:
            raise AssertionError(
                f"login form shown again after submitting credentials for {username!r}: "
                f"{form.error_message or _describe(response)}"
            )

        button_value = "deny" if deny else "login"
        if ("action", button_value) not in form.buttons:
            raise AssertionError(f"login form has no button action={button_value}: {_describe(response)}")
        form_data = {**form.hidden_fields, "action": button_value}
        if not deny:
            form_data.update(username=username, password=password)
        method, url, submitted = "POST", form.action, True

    raise AssertionError(f"sign-in did not reach {redact_url(stop_at)} within {MAX_REDIRECTS} requests")


@dataclass(frozen=True)
class PkcePair:
    """A PKCE code verifier and its S256 code challenge."""

    verifier: str
    challenge: str


def new_pkce_pair() -> PkcePair:
    """Return a random code verifier with its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return PkcePair(verifier=verifier, challenge=challenge)


def authorization_url(
    issuer: str,
    client_id: str,
    redirect_uri: str,
    state: str,
    code_challenge: str,
    scope: str = DEFAULT_SCOPE,
) -> str:
    """Return an authorization request URL for the code flow with PKCE S256."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
    )
    return f"{endpoint_url(issuer, 'auth')}?{query}"


def login_tokens(
    issuer: str,
    client_id: str = "fastn-sdk",
    redirect_uri: str = DEFAULT_REDIRECT_URI,
    username: str = TEST_USERNAME,
    password: str = TEST_PASSWORD,
) -> dict:
    """Sign in through the authorization code flow with PKCE and return the token response.

    Returns the token endpoint's JSON object, with access_token,
    refresh_token, expires_in and the other fields the realm sends.
    Raises AssertionError when a step fails.
    """
    pkce = new_pkce_pair()
    state = secrets.token_urlsafe(16)
    start_url = authorization_url(issuer, client_id, redirect_uri, state, pkce.challenge)

    with httpx.Client(timeout=HTTP_TIMEOUT_SECONDS) as client:
        callback_url = browse_login(start_url, redirect_uri, username=username, password=password, client=client)
        callback = parse_qs(urlsplit(callback_url).query)
        if callback.get("state") != [state]:
            raise AssertionError(f"callback state does not match the request: {redact_url(callback_url)}")
        if "code" not in callback:
            raise AssertionError(f"callback has no code: {redact_url(callback_url)}")

        response = client.post(
            endpoint_url(issuer, "token"),
            data={
                "grant_type": "authorization_code",
                "code": callback["code"][0],
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "code_verifier": pkce.verifier,
            },
        )
    if response.status_code != 200:
        raise AssertionError(f"code exchange failed: {_describe(response)}")
    return response.json()


def refresh(issuer: str, refresh_token: str, client_id: str) -> httpx.Response:
    """Send a refresh_token grant for a public client and return the raw response."""
    return httpx.post(
        endpoint_url(issuer, "token"),
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id},
        timeout=HTTP_TIMEOUT_SECONDS,
    )


class TokenEndpointCounter:
    """Counts requests to the realm's token endpoint through an httpx event hook."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/protocol/openid-connect/token"):
            self.calls += 1
