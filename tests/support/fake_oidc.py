"""A minimal OpenID Connect provider on loopback, for driving the dashboard's ``st.login``
end to end offline: discovery, an authorize endpoint that signs the user in at once (it
redirects straight back with a code), a token endpoint that answers with an RS256 ID token
(signed with a key made at test time) and the JWKS to check it. Only what an authorization
code flow without PKCE needs; it accepts one client and records every authorize request.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import RSAKey


@dataclass
class FakeProvider:
    """The provider's address, its one client, the user it signs in, what it was asked."""

    url: str
    client_id: str
    client_secret: str
    email: str
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: int = 0

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"


@contextmanager
def fake_oidc_provider(email: str = "ops@example.com") -> Iterator[FakeProvider]:
    """A running provider on a free loopback port; stopped on exit."""
    key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig"})
    codes: dict[str, dict[str, str]] = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    provider = FakeProvider(
        url=f"http://127.0.0.1:{server.server_address[1]}",
        client_id="ferrisqueue-dashboard",
        client_secret=secrets.token_urlsafe(16),
        email=email,
    )

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _json(self, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/.well-known/openid-configuration":
                self._json(
                    {
                        "issuer": provider.url,
                        "authorization_endpoint": f"{provider.url}/authorize",
                        "token_endpoint": f"{provider.url}/token",
                        "jwks_uri": f"{provider.url}/jwks",
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }
                )
            elif parts.path == "/jwks":
                self._json({"keys": [key.as_dict(private=False)]})
            elif parts.path == "/authorize":
                asked = {k: v[0] for k, v in parse_qs(parts.query).items()}
                provider.authorize_requests.append(asked)
                code = secrets.token_urlsafe(16)
                codes[code] = asked
                back = {"code": code, "state": asked.get("state", "")}
                self.send_response(302)
                self.send_header("Location", f"{asked['redirect_uri']}?{urlencode(back)}")
                self.end_headers()
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            asked = codes.pop(form.get("code", ""), None)
            if urlsplit(self.path).path != "/token" or asked is None:
                self.send_error(400)
                return
            provider.token_requests += 1
            now = int(time.time())
            claims = {
                "iss": provider.url,
                "sub": "operator-1",
                "aud": provider.client_id,
                "iat": now,
                "exp": now + 300,
                "email": provider.email,
                "email_verified": True,
            }
            if "nonce" in asked:
                claims["nonce"] = asked["nonce"]
            id_token = jwt.encode({"alg": "RS256", "kid": "test-key"}, claims, key)
            self._json(
                {
                    "access_token": secrets.token_urlsafe(16),
                    "token_type": "Bearer",
                    "expires_in": 300,
                    "id_token": id_token,
                }
            )

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
