"""`helm test`: the gateway Service answers GET /v1/models with an OpenAI model list.

With TEST_API_KEY set (the Secret's optional test key) the call must return 200 and a list.
Without it: 200 and a list when authentication is off, or 401 with OpenAI's error envelope and
code `invalid_api_key` (the gateway is up and refuses callers without a key). Retries for up to
TEST_DEADLINE_S seconds (default 60), every TEST_RETRY_S (default 3), while the Service has no
ready endpoint. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request


def call(url: str, key: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"raw": body[:200].decode(errors="replace")}


def check(status: int, body: dict[str, object], have_key: bool) -> str | None:
    """None when the answer is what a healthy gateway gives, else what is wrong."""
    data = body.get("data")
    if status == 200 and body.get("object") == "list" and isinstance(data, list):
        names = [m.get("id") for m in data if isinstance(m, dict)]
        print(f"helm-test: /v1/models -> 200, models: {names}")
        return None
    if status == 401 and not have_key:
        error = body.get("error")
        if isinstance(error, dict) and error.get("code") == "invalid_api_key":
            print(
                "helm-test: /v1/models -> 401 invalid_api_key: the gateway is up and requires "
                "API keys (add `test-api-key` to the Secret to test a real call)"
            )
            return None
    return f"unexpected answer {status}: {json.dumps(body)[:300]}"


def main() -> int:
    url = os.environ["GATEWAY_URL"].rstrip("/") + "/v1/models"
    key = os.environ.get("TEST_API_KEY", "").strip()
    deadline = time.monotonic() + float(os.environ.get("TEST_DEADLINE_S", "60"))
    retry_s = float(os.environ.get("TEST_RETRY_S", "3"))
    problem = "no answer"
    while time.monotonic() < deadline:
        try:
            problem = check(*call(url, key), have_key=bool(key)) or ""
        except (OSError, ValueError) as exc:
            problem = f"{url}: {exc}"
        if not problem:
            return 0
        print(f"helm-test: {problem}; retrying", file=sys.stderr)
        time.sleep(retry_s)
    print(f"helm-test: FAILED: {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
