"""FakeKubeApiServer: a stand-in for the Kubernetes API server, which cannot run here.

It serves, on 127.0.0.1, the REST paths the ``kubernetes`` client uses for namespaced custom
objects (``/apis/<group>/<version>/namespaces/<ns>/<plural>[/<name>[/status]]``): POST, GET,
GET list (``labelSelector``), PUT, PATCH (JSON merge patch) and DELETE, answering errors as
Kubernetes ``Status`` objects (404, 409, 422). It records every request and its body. Objects it
is sent can be checked by a ``validator`` (the real CRD schemas) and are refused with 422 when
they fail, as a real API server refuses what does not match a CRD's schema. No controller runs
behind it: tests move an object's ``status`` themselves (``set_status``), as KubeRay and KServe
would.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client

# (group, version, plural) -> kind
RESOURCES = {
    ("ray.io", "v1", "rayjobs"): "RayJob",
    ("serving.kserve.io", "v1beta1", "inferenceservices"): "InferenceService",
}
_PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<namespace>[^/]+)/"
    r"(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>status))?)?/?$"
)


@dataclass(frozen=True)
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: Any

    @property
    def is_status(self) -> bool:
        return self.path.endswith("/status")


class _Refused(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def matches(labels: dict[str, str], selector: str) -> bool:
    """Whether ``labels`` match a label selector (``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class FakeKubeApiServer:
    """A stand-in for the Kubernetes API server (namespaced custom objects only)."""

    def __init__(self, validator: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Prepare (not start) the fake; ``validator`` raises for an object to refuse."""
        self._validator = validator
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._requests: list[Recorded] = []
        self._versions = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> FakeKubeApiServer:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeKubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configuration(self) -> client.Configuration:
        """A client configuration pointing at this fake."""
        return client.Configuration(host=self.host)

    def reset(self) -> None:
        """Forget every object and request."""
        with self._lock:
            self._objects.clear()
            self._requests.clear()

    # -- what tests look at and do ------------------------------------------------------------

    def requests(self, method: str | None = None, plural: str | None = None) -> list[Recorded]:
        """The requests received, oldest first (optionally of one method and plural)."""
        with self._lock:
            found = list(self._requests)
        return [
            r
            for r in found
            if (method is None or r.method == method) and (plural is None or f"/{plural}" in r.path)
        ]

    def objects(self, plural: str) -> list[dict[str, Any]]:
        """Copies of the stored objects of ``plural``, by name."""
        with self._lock:
            found = [copy.deepcopy(o) for k, o in self._objects.items() if k[2] == plural]
        return sorted(found, key=lambda o: o["metadata"]["name"])

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._find(namespace, plural, name)
            return copy.deepcopy(obj) if obj else None

    def put(self, obj: dict[str, Any], plural: str) -> None:
        """Store ``obj`` as it is (something another client created)."""
        meta = obj["metadata"]
        with self._lock:
            stored = copy.deepcopy(obj)
            stored["metadata"].setdefault("generation", 1)
            stored["metadata"]["resourceVersion"] = str(next(self._versions))
            self._objects[(meta["namespace"], "", plural, meta["name"])] = stored

    def set_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Replace an object's status, as its controller would."""
        with self._lock:
            obj = self._find(namespace, plural, name)
            if obj is None:
                raise KeyError(f"{plural} {namespace}/{name} does not exist")
            obj["status"] = copy.deepcopy(status)
            obj["metadata"]["resourceVersion"] = str(next(self._versions))

    def wait_for(self, plural: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The first object of ``plural`` once there is one."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.objects(plural)
            if found:
                return found[0]
            time.sleep(0.01)
        raise TimeoutError(f"no {plural} was created within {timeout_s}s")

    # -- the REST API -------------------------------------------------------------------------

    def _find(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((namespace, "", plural, name))

    def handle(
        self, method: str, raw_path: str, content_type: str, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query)
        data = json.loads(body) if body else None
        with self._lock:
            self._requests.append(Recorded(method, parts.path, query, content_type, data))
        match = _PATH.match(parts.path)
        try:
            if match is None:
                raise _Refused(404, "NotFound", f"the server could not find {parts.path}")
            group, version, namespace, plural, name, sub = match.group(
                "group", "version", "namespace", "plural", "name", "sub"
            )
            kind = RESOURCES.get((group, version, plural))
            if kind is None:
                raise _Refused(404, "NotFound", f"no resource {plural}.{group}/{version}")
            with self._lock:
                return self._dispatch(
                    method,
                    group,
                    version,
                    kind,
                    namespace,
                    plural,
                    name,
                    sub,
                    query,
                    content_type,
                    data,
                )
        except _Refused as refused:
            return refused.code, {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": refused.message,
                "reason": refused.reason,
                "code": refused.code,
            }

    def _dispatch(
        self,
        method: str,
        group: str,
        version: str,
        kind: str,
        namespace: str,
        plural: str,
        name: str | None,
        sub: str | None,
        query: dict[str, list[str]],
        content_type: str,
        data: Any,
    ) -> tuple[int, dict[str, Any]]:
        what = f'{plural}.{group} "{name}"'
        key = (namespace, "", plural, name or "")
        if name is None:
            if method == "GET":
                selector = (query.get("labelSelector") or [""])[0]
                items = [
                    copy.deepcopy(o)
                    for k, o in sorted(self._objects.items())
                    if k[0] == namespace
                    and k[2] == plural
                    and matches(o["metadata"].get("labels") or {}, selector)
                ]
                return 200, {
                    "apiVersion": f"{group}/{version}",
                    "kind": f"{kind}List",
                    "metadata": {"resourceVersion": str(next(self._versions))},
                    "items": items,
                }
            if method == "POST":
                obj = self._checked(data, kind, f"{group}/{version}")
                meta = obj["metadata"]
                if meta.get("namespace", namespace) != namespace:
                    raise _Refused(400, "BadRequest", "the namespace of the object does not match")
                key = (namespace, "", plural, meta["name"])
                if key in self._objects:
                    raise _Refused(
                        409, "AlreadyExists", f'{plural}.{group} "{meta["name"]}" already exists'
                    )
                meta.update(
                    namespace=namespace,
                    uid=f"uid-{next(self._versions)}",
                    resourceVersion=str(next(self._versions)),
                    generation=1,
                    creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                )
                obj.pop("status", None)
                self._objects[key] = obj
                return 201, copy.deepcopy(obj)
            raise _Refused(405, "MethodNotAllowed", f"{method} is not allowed here")
        current = self._objects.get(key)
        if current is None:
            raise _Refused(404, "NotFound", f"{what} not found")
        if method == "GET":
            return 200, copy.deepcopy(current)
        if method == "DELETE":
            del self._objects[key]
            return 200, {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Success",
                "details": {"name": name, "group": group, "kind": plural},
            }
        if method in ("PUT", "PATCH"):
            if method == "PUT":
                new = copy.deepcopy(data)
                sent_version = (new.get("metadata") or {}).get("resourceVersion")
                if sent_version and sent_version != current["metadata"]["resourceVersion"]:
                    raise _Refused(
                        409,
                        "Conflict",
                        f"Operation cannot be fulfilled on {what}: the object has been modified",
                    )
            else:
                if content_type.split(";")[0].strip() != "application/merge-patch+json":
                    raise _Refused(415, "UnsupportedMediaType", f"{content_type} not supported")
                new = merge_patch(current, data)
            if sub == "status":
                updated = copy.deepcopy(current)
                updated["status"] = new.get("status")
            else:
                updated = self._checked(new, kind, f"{group}/{version}")
                for field in ("uid", "creationTimestamp", "namespace", "name", "generation"):
                    updated["metadata"][field] = current["metadata"].get(field)
                if "status" in current:
                    updated["status"] = current["status"]
                else:
                    updated.pop("status", None)
                if updated.get("spec") != current.get("spec"):
                    updated["metadata"]["generation"] = current["metadata"]["generation"] + 1
            updated["metadata"]["resourceVersion"] = str(next(self._versions))
            self._objects[key] = updated
            return 200, copy.deepcopy(updated)
        raise _Refused(405, "MethodNotAllowed", f"{method} is not allowed here")

    def _checked(self, data: Any, kind: str, api_version: str) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict):
            raise _Refused(400, "BadRequest", "the body is not an object with metadata")
        if data.get("kind") != kind or data.get("apiVersion") != api_version:
            raise _Refused(400, "BadRequest", f"expected {api_version} {kind}")
        if self._validator is not None:
            sent = {k: v for k, v in data.items() if k != "status"}
            try:
                self._validator(sent)
            except Exception as error:
                raise _Refused(422, "Invalid", f"{kind} is invalid: {error}") from None
        return copy.deepcopy(data)


class _Handler(BaseHTTPRequestHandler):
    owner: FakeKubeApiServer
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        code, answer = self.owner.handle(
            self.command, self.path, self.headers.get("Content-Type") or "", body
        )
        payload = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass


def iter_bodies(requests: list[Recorded]) -> Iterator[dict[str, Any]]:
    """The JSON bodies of ``requests`` that have one."""
    return (r.body for r in requests if isinstance(r.body, dict))
