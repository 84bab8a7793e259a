"""A small STAC API and asset server for tests, on 127.0.0.1 in a thread (http.server based).

Serves the root catalog (``/``), ``/conformance``, ``/collections/<id>``, ``/search`` (GET and POST;
filters: collections, ids, bbox, datetime and the query extension's eq/lt/lte/gt/gte), and files
under ``/files/<name>`` with HEAD and single ``Range`` requests (206 answers), which is what GDAL's
``/vsicurl/`` and resumed downloads need. Faults can be injected per file to test the downloader:
``fail_first`` (answer 500 to that many requests), ``drop_after`` (close the connection after that
many body bytes, for the first ``drop_times`` requests), ``ignore_range`` (answer 200 with the whole
file to range requests), ``truncate_to`` (serve only that many bytes, with a matching
Content-Length) and ``corrupt`` (flip one byte). Every request is logged in ``server.requests``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/collections",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]


@dataclass
class FileFaults:
    """Faults injected into the answers for one file."""

    fail_first: int = 0
    drop_after: int | None = None
    drop_times: int = 1
    ignore_range: bool = False
    truncate_to: int | None = None
    corrupt: bool = False
    served: int = 0  # GET requests answered so far (state)


@dataclass
class RequestRecord:
    method: str
    path: str
    range: str | None
    status: int


@dataclass
class StacTestServer:
    """State of the test server: items, collections, files and faults; ``url`` once started."""

    items: list[dict[str, Any]] = field(default_factory=list)
    collections: list[str] = field(default_factory=lambda: ["sentinel-2-l2a"])
    files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, FileFaults] = field(default_factory=dict)
    search_failures: int = 0  # answer 503 to that many /search requests
    requests: list[RequestRecord] = field(default_factory=list)
    url: str = ""

    def file_url(self, name: str) -> str:
        return f"{self.url}/files/{name}"

    def count(self, method: str | None = None, path: str | None = None, ranged: bool | None = None):
        """Number of logged requests matching the method, the path prefix and whether ranged."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method)
            and (path is None or r.path.startswith(path))
            and (ranged is None or (r.range is not None) == ranged)
        )

    def __enter__(self) -> StacTestServer:
        state = self

        class Handler(_Handler):
            server_state = state

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    server_state: StacTestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # -- plumbing
    def _log(self, status: int) -> None:
        self.server_state.requests.append(
            RequestRecord(self.command, urlsplit(self.path).path, self.headers.get("Range"), status)
        )

    def _json(self, data: Any, status: int = 200) -> None:
        body = json.dumps(data).encode()
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int) -> None:
        body = json.dumps({"code": str(status), "description": "test server error"}).encode()
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- routes
    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if urlsplit(self.path).path.rstrip("/") == "/search":
            self._search(body)
        else:
            self._error(404)

    def _route(self, head: bool = False) -> None:
        state = self.server_state
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        if path.startswith("/files/"):
            self._file(path[len("/files/") :], head)
        elif path == "/":
            self._json(self._root())
        elif path == "/conformance":
            self._json({"conformsTo": CONFORMANCE})
        elif path == "/collections":
            self._json(
                {"collections": [self._collection(c) for c in state.collections], "links": []}
            )
        elif path.startswith("/collections/") and path[13:] in state.collections:
            self._json(self._collection(path[13:]))
        elif path == "/search":
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            params: dict[str, Any] = {}
            for key in ("collections", "ids"):
                if key in query:
                    params[key] = query[key].split(",")
            if "bbox" in query:
                params["bbox"] = [float(v) for v in query["bbox"].split(",")]
            if "datetime" in query:
                params["datetime"] = query["datetime"]
            if "query" in query:
                params["query"] = json.loads(query["query"])
            self._search(params)
        else:
            self._error(404)

    def _root(self) -> dict[str, Any]:
        url = self.server_state.url
        return {
            "type": "Catalog",
            "stac_version": "1.0.0",
            "id": "test-stac",
            "description": "STAC API of the test suite",
            "conformsTo": CONFORMANCE,
            "links": [
                {"rel": "self", "href": f"{url}/", "type": "application/json"},
                {"rel": "root", "href": f"{url}/", "type": "application/json"},
                {"rel": "conformance", "href": f"{url}/conformance", "type": "application/json"},
                {"rel": "data", "href": f"{url}/collections", "type": "application/json"},
                {
                    "rel": "search",
                    "href": f"{url}/search",
                    "type": "application/geo+json",
                    "method": "GET",
                },
                {
                    "rel": "search",
                    "href": f"{url}/search",
                    "type": "application/geo+json",
                    "method": "POST",
                },
            ],
        }

    def _collection(self, name: str) -> dict[str, Any]:
        url = self.server_state.url
        return {
            "type": "Collection",
            "stac_version": "1.0.0",
            "id": name,
            "description": f"test collection {name}",
            "license": "proprietary",
            "extent": {
                "spatial": {"bbox": [[-180, -90, 180, 90]]},
                "temporal": {"interval": [["2015-06-27T00:00:00Z", None]]},
            },
            "links": [
                {"rel": "self", "href": f"{url}/collections/{name}"},
                {"rel": "root", "href": f"{url}/"},
            ],
        }

    def _search(self, params: dict[str, Any]) -> None:
        state = self.server_state
        if state.search_failures > 0:
            state.search_failures -= 1
            self._error(503)
            return
        features = [item for item in state.items if _matches(item, params)]
        self._json(
            {
                "type": "FeatureCollection",
                "features": features,
                "links": [],
                "numberReturned": len(features),
            }
        )

    def _file(self, name: str, head: bool) -> None:
        state = self.server_state
        if name not in state.files:
            self._error(404)
            return
        data = state.files[name]
        faults = state.faults.setdefault(name, FileFaults())
        if head:
            self._log(200)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", '"v1"')
            self.end_headers()
            return
        faults.served += 1
        if faults.served <= faults.fail_first:
            self._error(500)
            return
        if faults.truncate_to is not None:
            data = data[: faults.truncate_to]
        if faults.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        requested = self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", requested or "")
        if match and not faults.ignore_range:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            end = min(end, len(data) - 1)
            if start >= len(data):
                self._log(416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body, status = data[start : end + 1], 206
        else:
            body, status, start = data, 200, 0
        self._log(status)
        self.send_response(status)
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", '"v1"')
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
        self.end_headers()
        drop = (
            faults.drop_after is not None and faults.served - faults.fail_first <= faults.drop_times
        )
        if drop:
            self.wfile.write(body[: faults.drop_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


def _matches(item: dict[str, Any], params: dict[str, Any]) -> bool:
    if "collections" in params and item.get("collection") not in params["collections"]:
        return False
    if "ids" in params and item["id"] not in params["ids"]:
        return False
    if "bbox" in params:
        a = params["bbox"]
        b = item["bbox"]
        if a[0] > b[2] or a[2] < b[0] or a[1] > b[3] or a[3] < b[1]:
            return False
    if "datetime" in params:
        start, _, end = params["datetime"].partition("/")
        when = _parse_time(item["properties"]["datetime"])
        if start not in ("", "..") and when < _parse_time(start):
            return False
        if end not in ("", "..") and when > _parse_time(end):
            return False
    for name, condition in (params.get("query") or {}).items():
        value = item["properties"].get(name)
        for op, limit in condition.items():
            if value is None:
                return False
            ok = {
                "eq": value == limit,
                "lt": value < limit,
                "lte": value <= limit,
                "gt": value > limit,
                "gte": value >= limit,
            }.get(op, True)
            if not ok:
                return False
    return True


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def make_item(
    item_id: str,
    when: str,
    cloud: float,
    assets: dict[str, dict[str, Any]],
    bbox: list[float],
    properties: dict[str, Any] | None = None,
    collection: str = "sentinel-2-l2a",
) -> dict[str, Any]:
    """A STAC item dict (GeoJSON Feature) with a rectangular footprint."""
    minx, miny, maxx, maxy = bbox
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [],
        "id": item_id,
        "collection": collection,
        "bbox": bbox,
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]],
        },
        "properties": {"datetime": when, "eo:cloud_cover": cloud, **(properties or {})},
        "links": [],
        "assets": assets,
    }
