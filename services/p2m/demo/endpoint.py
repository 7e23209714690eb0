"""A small client of a KServe model server's v1 REST protocol, for the demo.

``GET /v1/models`` lists the models, ``GET /v1/models/{name}`` answers 200 when the model is
ready, and ``POST /v1/models/{name}:predict`` with ``{"instances": [...]}`` answers
``{"predictions": [...]}``. Errors come back as ``{"error": "..."}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from p2m.common.errors import InvalidInput, NotFound, P2MError, Unavailable

#: Seconds to wait for a TCP connection to the endpoint (the prediction itself may take longer).
CONNECT_TIMEOUT_S = 5.0


def check_endpoint(url: str, field: str = "endpoint") -> str:
    """``url`` as a base URL without a trailing slash; InvalidInput unless http(s)://host[:port].

    Args:
        url: The endpoint's base URL, e.g. ``http://127.0.0.1:8080``.
        field: What to name in the error.

    Returns:
        The URL without a trailing slash.

    Raises:
        InvalidInput: Not an http(s) URL with a host, or with a query or fragment.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises ValueError when not a number in range
    except ValueError as exc:
        raise InvalidInput(field, f"not a valid URL: {url!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(field, f"must be an http:// or https:// URL with a host, not {url!r}")
    if parts.query or parts.fragment:
        raise InvalidInput(field, f"must have no query or fragment: {url!r}")
    if port == 0:
        raise InvalidInput(field, f"port 0 is not a port to connect to: {url!r}")
    return url.strip().rstrip("/")


class KServeClient:
    """Calls one model at a KServe v1 endpoint; every failure becomes a P2MError with a reason.

    Args:
        endpoint: Base URL of the model server, e.g. ``http://127.0.0.1:8080``.
        name: The model's name at that server ("" for a client that only lists models).
        timeout_s: Seconds to wait for one prediction.
        transport: An httpx transport (tests); default: the network.
    """

    def __init__(
        self,
        endpoint: str,
        name: str,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.endpoint = check_endpoint(endpoint)
        self.name = name
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
            transport=transport,
            trust_env=False,  # the endpoint is in-cluster or local: never through a proxy
        )

    @property
    def predict_url(self) -> str:
        """Where predictions are posted."""
        return f"{self.endpoint}/v1/models/{quote(self.name, safe='')}:predict"

    def predict(self, text: str) -> str:
        """The model's output for one input.

        Raises:
            Unavailable: The endpoint cannot be reached, timed out, or answered 5xx.
            NotFound: The endpoint has no model of this name.
            InvalidInput: The endpoint refused the input (4xx).
            P2MError: The answer is not ``{"predictions": [one output]}``.
        """
        body = self._request("POST", self.predict_url, json={"instances": [text]})
        predictions = body.get("predictions") if isinstance(body, dict) else None
        if not isinstance(predictions, list) or len(predictions) != 1:
            raise P2MError(
                f"the model endpoint {self.predict_url} answered without one prediction: "
                f"{_clip(json.dumps(body, ensure_ascii=False))}"
            )
        prediction = predictions[0]
        return prediction if isinstance(prediction, str) else json.dumps(prediction)

    def list_models(self) -> list[str]:
        """The names of the models the endpoint serves (``GET /v1/models``)."""
        url = f"{self.endpoint}/v1/models"
        body = self._request("GET", url)
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise P2MError(f"{url} answered without a list of model names")
        return models

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> KServeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise Unavailable(f"the model endpoint {url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"the model endpoint {url} is not reachable ({type(exc).__name__}: {exc})"
            ) from None
        if response.status_code != 200:
            detail = _error_detail(response)
            message = f"the model endpoint {url} answered HTTP {response.status_code}: {detail}"
            if response.status_code == 404:
                raise NotFound(message)
            if 400 <= response.status_code < 500:
                raise InvalidInput("input", message)
            raise Unavailable(message)
        try:
            return response.json()
        except ValueError:
            raise P2MError(
                f"the model endpoint {url} answered with something other than JSON: "
                f"{_clip(response.text)}"
            ) from None


def _error_detail(response: httpx.Response) -> str:
    """KServe's ``{"error": ...}`` text, else the start of the body, else the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        return _clip(str(body["error"]))
    if isinstance(body, dict) and body.get("detail"):  # FastAPI's own errors
        return _clip(str(body["detail"]))
    return _clip(response.text) or response.reason_phrase


def _clip(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
