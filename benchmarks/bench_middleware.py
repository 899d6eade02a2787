"""Measure the per-request cost of FastnAuthMiddleware with in-process ASGI calls.

    python benchmarks/bench_middleware.py [--requests N] [--repeat R] [--json PATH]

The script starts the test realm (tests/idp/realm.mjs, Node.js) on 127.0.0.1,
obtains real tokens, and then calls ASGI applications directly with a prebuilt
scope and trivial receive/send callables. No HTTP server sits in the timed
path, so each rate shows the cost of the middleware and the inner
application only. Every case runs R rounds of N requests, with the rounds of
all cases interleaved so that drift in machine speed hits every case alike.
The table gives the median round's rate and compares it with the bare inner
application measured in the same run.

A last case sends 200 concurrent requests with one unknown token and counts
the realm's token-endpoint calls, to show that they share one resolution.

Every server listens on 127.0.0.1 only. The script stops the realm and the
login server before it exits. Tokens are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import platform
import secrets
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlencode, urlsplit

# tests.support is not part of the installed package, so import it from the checkout.
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware  # noqa: E402
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware  # noqa: E402
from mcp.server.auth.provider import AccessToken  # noqa: E402
from pydantic import AnyHttpUrl  # noqa: E402
from starlette.middleware.authentication import AuthenticationMiddleware  # noqa: E402
from starlette.types import ASGIApp, Message, Receive, Scope, Send  # noqa: E402

from fastn_asgi_auth import FastnAuthMiddleware, FastnAuthService, FastnAuthSettings, MemoryStore  # noqa: E402
from fastn_asgi_auth.pkce import new_pkce_pair  # noqa: E402
from fastn_asgi_auth.routes import protected_resource_metadata_url  # noqa: E402
from tests.support.realm import RealmServer, TokenEndpointCounter, browse_login, login_tokens  # noqa: E402
from tests.support.servers import serve  # noqa: E402

RESOURCE_PATH: Final = "/mcp"
PUBLIC_PATH: Final = "/health"
# browse_login stops at this redirect without requesting it; nothing listens there.
CLIENT_REDIRECT_URI: Final = "http://127.0.0.1:3000/callback"
# 32 hex digits: the shape of a Fastn API key.
API_KEY: Final = "0123456789abcdef" * 2
JUNK_TOKEN: Final = "junk-benchmark-token"
CONCURRENT_UNKNOWN_TOKEN: Final = "unknown-concurrent-token"
CONCURRENT_REQUESTS: Final = 200
CONCURRENT_TIMEOUT_SECONDS: Final = 60.0
HTTP_TIMEOUT_SECONDS: Final = 10.0
# A run of the largest allowed size lasts at most 9 cases x (MAX_REPEAT + 1
# warm-up) rounds x MAX_ROUND_SECONDS, about 32 minutes. One-hour realm
# tokens therefore outlive it, and no upstream refresh falls into a timed round.
REALM_ACCESS_TOKEN_TTL: Final = 3600
REALM_REFRESH_TOKEN_TTL: Final = 7200
WARMUP_REQUESTS: Final = 1000
# A round reads the clock for its time limit once per batch of this many
# requests, not once per request.
DEADLINE_CHECK_INTERVAL: Final = 500
MAX_REQUESTS: Final = 1_000_000
MAX_REPEAT: Final = 20
MAX_ROUND_SECONDS: Final = 10.0

RESPONSE_START: Final[Message] = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
}
RESPONSE_BODY: Final[Message] = {"type": "http.response.body", "body": b"ok"}
REQUEST_MESSAGE: Final[Message] = {"type": "http.request", "body": b"", "more_body": False}


class BenchmarkError(RuntimeError):
    """A setup step failed or a case returned an unexpected status."""


async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Send a constant 200 response: the application behind every stack."""
    await send(RESPONSE_START)
    await send(RESPONSE_BODY)


async def receive_request() -> Message:
    return REQUEST_MESSAGE


class StatusCounter:
    """ASGI send callable that counts response statuses and drops everything else."""

    def __init__(self) -> None:
        self.statuses: collections.Counter[int] = collections.Counter()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.statuses[message["status"]] += 1


def http_scope(base_url: str, path: str, token: str | None = None) -> Scope:
    """Build the scope a server would pass for GET path, with an optional bearer token."""
    server = urlsplit(base_url)
    headers = [
        (b"host", server.netloc.encode()),
        (b"user-agent", b"bench-middleware"),
        (b"accept", b"*/*"),
    ]
    if token is not None:
        headers.append((b"authorization", b"Bearer " + token.encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": (server.hostname, server.port),
    }


@dataclass
class Case:
    name: str
    app: ASGIApp
    scope: Scope
    expected_status: int
    counter: StatusCounter = field(default_factory=StatusCounter)
    rates: list[float] = field(default_factory=list)
    first_request_ms: float = 0.0


# Token preparation


def obtain_own_access_token(issuer: str, store: MemoryStore) -> tuple[FastnAuthSettings, str]:
    """Run the OAuth proxy flow against a uvicorn-served middleware and return its settings and access token.

    The served middleware writes into store, so a second middleware built on
    the same settings and store accepts the token. The flow registers a
    public client, approves the consent page, signs in at the realm and
    exchanges the code with PKCE.
    """
    holder: dict[str, FastnAuthSettings] = {}

    def build(base_url: str) -> ASGIApp:
        holder["settings"] = FastnAuthSettings(issuer=issuer, base_url=base_url)
        return FastnAuthMiddleware(inner_app, settings=holder["settings"], store=store)

    with serve(build, lifespan="off") as server, httpx.Client(timeout=HTTP_TIMEOUT_SECONDS) as http:
        registration = http.post(
            server.url + "/oauth/register",
            json={
                "client_name": "middleware benchmark",
                "redirect_uris": [CLIENT_REDIRECT_URI],
                "token_endpoint_auth_method": "none",
            },
        )
        if registration.status_code != 201:
            raise BenchmarkError(f"client registration failed: {describe_error(registration)}")
        client_id = registration.json()["client_id"]

        pkce = new_pkce_pair()
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": CLIENT_REDIRECT_URI,
            "code_challenge": pkce.code_challenge,
            "code_challenge_method": "S256",
            "state": secrets.token_urlsafe(16),
            "resource": server.url + RESOURCE_PATH,
        }
        final_redirect = browse_login(
            server.url + "/oauth/authorize?" + urlencode(query), CLIENT_REDIRECT_URI, consent="approve"
        )
        callback = parse_qs(urlsplit(final_redirect).query)
        if "code" not in callback:
            raise BenchmarkError(f"the proxy flow ended without a code (error: {callback.get('error')})")

        exchange = http.post(
            server.url + "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": callback["code"][0],
                "redirect_uri": CLIENT_REDIRECT_URI,
                "client_id": client_id,
                "code_verifier": pkce.code_verifier,
            },
        )
        if exchange.status_code != 200:
            raise BenchmarkError(f"code exchange failed: {describe_error(exchange)}")
        return holder["settings"], exchange.json()["access_token"]


def describe_error(response: httpx.Response) -> str:
    """Return the status and the OAuth error fields of a response, never a token."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    fields = {key: body[key] for key in ("error", "error_description") if isinstance(body, dict) and key in body}
    return f"HTTP {response.status_code} {fields}"


# The MCP SDK's bearer stack, for comparison


class DictTokenVerifier:
    """TokenVerifier that looks tokens up in a dict: the cheapest verifier the SDK stack can have."""

    def __init__(self, tokens: dict[str, AccessToken]) -> None:
        self._tokens = tokens

    async def verify_token(self, token: str) -> AccessToken | None:
        return self._tokens.get(token)


def build_mcp_sdk_stack(settings: FastnAuthSettings, token: str) -> ASGIApp:
    """Wrap inner_app in the bearer-token middleware of the MCP SDK's streamable HTTP app.

    The order is the one mcp 2.3 builds in mcp/server/lowlevel/server.py,
    without the router between AuthContextMiddleware and RequireAuthMiddleware.
    BearerAuthBackend gets no resource_server_url (the SDK's default,
    validate_token_resource off), so it skips the per-request resource check.
    """
    access_token = AccessToken(
        token=token,
        client_id="benchmark-client",
        scopes=list(settings.scopes),
        expires_at=int(time.time()) + REALM_ACCESS_TOKEN_TTL,
        resource=settings.resource_url(RESOURCE_PATH),
    )
    metadata_url = AnyHttpUrl(protected_resource_metadata_url(settings, RESOURCE_PATH))
    protected = RequireAuthMiddleware(inner_app, required_scopes=[], resource_metadata_url=metadata_url)
    return AuthenticationMiddleware(
        AuthContextMiddleware(protected), backend=BearerAuthBackend(DictTokenVerifier({token: access_token}))
    )


# Measurement


async def run_round(case: Case, requests: int, max_seconds: float) -> tuple[int, float]:
    """Call case.app up to `requests` times, stopping after the batch in which max_seconds pass.

    Returns the number of calls made and the elapsed seconds. Raises
    BenchmarkError when any response has a status other than the expected one.
    """
    app, scope, send = case.app, case.scope, case.counter.send
    case.counter.statuses.clear()
    done = 0
    start = time.perf_counter()
    deadline = start + max_seconds
    while done < requests:
        batch = min(DEADLINE_CHECK_INTERVAL, requests - done)
        for _ in range(batch):
            await app(scope, receive_request, send)
        done += batch
        if time.perf_counter() > deadline:
            break
    elapsed = time.perf_counter() - start
    check_statuses(case, done)
    return done, elapsed


def check_statuses(case: Case, sent: int) -> None:
    matching = case.counter.statuses[case.expected_status]
    if matching != sent:
        raise BenchmarkError(
            f"{case.name}: {sent - matching} of {sent} responses had a status other than"
            f" {case.expected_status} (counts by status: {dict(case.counter.statuses)})"
        )


async def warm_up(case: Case, requests: int) -> None:
    """Time the first request, which fills the caches, then send more untimed requests."""
    case.counter.statuses.clear()
    start = time.perf_counter()
    await case.app(case.scope, receive_request, case.counter.send)
    case.first_request_ms = (time.perf_counter() - start) * 1000
    check_statuses(case, 1)
    await run_round(case, requests, MAX_ROUND_SECONDS)


async def measure(cases: list[Case], requests: int, repeat: int, max_round_seconds: float) -> None:
    for case in cases:
        await warm_up(case, min(requests, WARMUP_REQUESTS))
    for round_number in range(repeat):
        for case in cases:
            gc.collect()
            done, elapsed = await run_round(case, requests, max_round_seconds)
            if done < requests:
                print(
                    f"note: round {round_number + 1} of {case.name!r} hit the {max_round_seconds:g} s limit"
                    f" after {done} of {requests} requests",
                    file=sys.stderr,
                )
            case.rates.append(done / elapsed)


async def measure_concurrent_unknown_token(settings: FastnAuthSettings) -> dict[str, Any]:
    """Send CONCURRENT_REQUESTS requests with one unknown token at once, twice, to a fresh middleware.

    The first wave shows single-flight (one resolution, one refresh-grant try
    per configured upstream client). The negative cache serves the second
    wave, which should add no call.
    """
    counter = TokenEndpointCounter()
    http = httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS, event_hooks={"request": [counter]})
    service = FastnAuthService(settings, http=http)
    app = FastnAuthMiddleware(inner_app, service=service)
    scope = http_scope(settings.public_base_url, RESOURCE_PATH, CONCURRENT_UNKNOWN_TOKEN)
    statuses = StatusCounter()
    waves = []
    try:
        for _ in range(2):
            calls_before = counter.calls
            start = time.perf_counter()
            await asyncio.wait_for(
                asyncio.gather(*(app(scope, receive_request, statuses.send) for _ in range(CONCURRENT_REQUESTS))),
                CONCURRENT_TIMEOUT_SECONDS,
            )
            waves.append(
                {
                    "token_endpoint_calls": counter.calls - calls_before,
                    "elapsed_ms": (time.perf_counter() - start) * 1000,
                }
            )
    finally:
        await service.aclose()
    return {
        "requests_per_wave": CONCURRENT_REQUESTS,
        "configured_upstream_clients": len(settings.refresh_client_ids),
        "statuses": {str(status): count for status, count in sorted(statuses.statuses.items())},
        "waves": waves,
    }


# Reporting


def summarize(cases: list[Case]) -> list[dict[str, Any]]:
    baseline_rate = statistics.median(cases[0].rates)
    rows = []
    for case in cases:
        rate = statistics.median(case.rates)
        rows.append(
            {
                "case": case.name,
                "expected_status": case.expected_status,
                "round_rates": [round(value, 1) for value in case.rates],
                "median_requests_per_second": round(rate, 1),
                "ratio_to_baseline": rate / baseline_rate,
                "added_microseconds_per_request": 1e6 / rate - 1e6 / baseline_rate,
                # (fastest round - slowest round) / median: a wide spread means a noisy machine.
                "round_spread": (max(case.rates) - min(case.rates)) / rate,
                "first_request_ms": case.first_request_ms,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | median requests/s | ratio to baseline | added µs/request | round spread | first request (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['median_requests_per_second']:,.0f} | {row['ratio_to_baseline']:.3f}"
            f" | {row['added_microseconds_per_request']:.2f} | {row['round_spread']:.0%}"
            f" | {row['first_request_ms']:.2f} |"
        )
    return "\n".join(lines)


def format_concurrency(result: dict[str, Any]) -> str:
    first, second = result["waves"]
    return (
        f"{result['requests_per_wave']} concurrent requests with one unknown token:"
        f" statuses {result['statuses']} over both waves;"
        f" realm token-endpoint calls {first['token_endpoint_calls']} in the first wave"
        f" ({result['configured_upstream_clients']} upstream client ids configured, {first['elapsed_ms']:.1f} ms),"
        f" {second['token_endpoint_calls']} in the second wave ({second['elapsed_ms']:.1f} ms)."
    )


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


# Entry point


def bounded_int(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {low} to {high}")
        return value

    return parse


def bounded_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_ROUND_SECONDS:
        raise argparse.ArgumentTypeError(f"{value} is out of range: use more than 0 and at most {MAX_ROUND_SECONDS:g}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests",
        type=bounded_int(1, MAX_REQUESTS),
        default=20_000,
        help=f"requests per round and case (default 20000, at most {MAX_REQUESTS})",
    )
    parser.add_argument(
        "--repeat",
        type=bounded_int(1, MAX_REPEAT),
        default=5,
        help=f"rounds per case, of which the median is reported (default 5, at most {MAX_REPEAT})",
    )
    parser.add_argument(
        "--max-round-seconds",
        type=bounded_seconds,
        default=MAX_ROUND_SECONDS,
        help=f"time limit of one round in seconds, after which it stops early (default {MAX_ROUND_SECONDS:g})",
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the results as JSON to PATH")
    return parser.parse_args(argv)


async def run_benchmark(
    args: argparse.Namespace, settings: FastnAuthSettings, store: MemoryStore, own_token: str, realm_jwt: str
) -> dict[str, Any]:
    service = FastnAuthService(settings, store=store, http=httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS))
    ours = FastnAuthMiddleware(inner_app, service=service)
    mcp_token = secrets.token_urlsafe(32)
    mcp_stack = build_mcp_sdk_stack(settings, mcp_token)
    base_url = settings.public_base_url

    cases = [
        Case("baseline: inner app, no middleware", inner_app, http_scope(base_url, RESOURCE_PATH), 200),
        Case("ours: own OAuth access token", ours, http_scope(base_url, RESOURCE_PATH, own_token), 200),
        Case("ours: realm JWT, cached", ours, http_scope(base_url, RESOURCE_PATH, realm_jwt), 200),
        Case("ours: API key, cached", ours, http_scope(base_url, RESOURCE_PATH, API_KEY), 200),
        # NOTE: the negative cache keeps the junk token for negative_cache_ttl (60 s by default), so in
        # longer runs one of its rounds includes the two refresh-grant calls to the realm again.
        Case("ours: junk token, negative cache", ours, http_scope(base_url, RESOURCE_PATH, JUNK_TOKEN), 401),
        Case("ours: no token, 401 challenge", ours, http_scope(base_url, RESOURCE_PATH), 401),
        Case("ours: public path /health", ours, http_scope(base_url, PUBLIC_PATH), 200),
        Case("MCP SDK stack: valid token", mcp_stack, http_scope(base_url, RESOURCE_PATH, mcp_token), 200),
        Case("MCP SDK stack: no token", mcp_stack, http_scope(base_url, RESOURCE_PATH), 401),
    ]
    try:
        await measure(cases, args.requests, args.repeat, args.max_round_seconds)
    finally:
        await service.aclose()
    concurrency = await measure_concurrent_unknown_token(settings)
    return {"cases": summarize(cases), "concurrency": concurrency}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    realm = RealmServer()
    realm.start(access_token_ttl=REALM_ACCESS_TOKEN_TTL, refresh_token_ttl=REALM_REFRESH_TOKEN_TTL)
    try:
        store = MemoryStore()
        settings, own_token = obtain_own_access_token(realm.issuer, store)
        realm_jwt = login_tokens(realm.issuer)["access_token"]
        results = asyncio.run(run_benchmark(args, settings, store, own_token, realm_jwt))
    finally:
        realm.stop()

    arguments = argv if argv is not None else sys.argv[1:]
    report = {
        "command": " ".join(["python", "benchmarks/bench_middleware.py", *arguments]),
        "requests": args.requests,
        "repeat": args.repeat,
        "machine": machine_info(),
        **results,
    }
    print(
        f"{args.repeat} rounds of up to {args.requests} in-process requests per case,"
        f" Python {report['machine']['python']}"
    )
    print(format_table(results["cases"]))
    print()
    print(format_concurrency(results["concurrency"]))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
