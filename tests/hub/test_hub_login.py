"""The browser's way in: PAM login with the Unix password, OAuth to the user's server, and
tfenv's API with the browser's cookie (the token JupyterLab gets carries the tfenv scopes
only because the example config lets the server's OAuth client hand them out)."""

from __future__ import annotations

import pytest

from .harness import ALICE, BOB, HubHarness

pytestmark = [pytest.mark.docker]


def test_browser_login_and_tfenv_api(hub: HubHarness, alice_server: str, bob_server: str) -> None:
    url = hub.public_url
    # A wrong password is refused by PAM.
    _, status = hub.browser_login(ALICE, "not-" + hub.passwords[ALICE])
    assert status == 403
    session, status = hub.browser_login(ALICE, hub.passwords[ALICE])
    assert status == 302, "PAM login with the Unix password failed (see the hub log)"

    # A page of her server: OAuth with the hub, then the server's own cookie.
    page = session.get(f"{url}/user/{ALICE}/files/.profile", timeout=60)
    assert any("/hub/api/oauth2/authorize" in r.url for r in page.history), page.history
    assert any(c.name == f"jupyterhub-user-{ALICE}" for c in session.cookies)

    # tfenv's API with the cookie: read ...
    response = session.get(f"{url}/user/{ALICE}/tfenv/environments", timeout=60)
    assert response.status_code == 200, response.text
    assert "tf220" in response.text
    # ... and write (past the scope check: the checkpoint does not exist).
    xsrf = next(
        (c.value for c in session.cookies if c.name == "_xsrf" and c.path.startswith("/user/")),
        "",
    )
    assert xsrf, [(c.name, c.path) for c in session.cookies]
    response = session.delete(
        f"{url}/user/{ALICE}/tfenv/checkpoints/py/nothing.weights.h5",
        headers={"X-XSRFToken": xsrf, "If-Match": '"x"'},
        timeout=60,
    )
    assert response.status_code == 404, f"{response.status_code} {response.text}"

    # Her browser session does not open Bob's server.
    response = session.get(f"{url}/user/{BOB}/api/kernels", allow_redirects=False, timeout=60)
    assert response.status_code in (302, 403), response.status_code
