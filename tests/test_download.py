"""STAC download: search, item choice, band assets, area-of-interest reads, and a downloader that
survives 500s, dropped connections and corrupt files. Everything runs against a STAC API and asset
server started by the tests on 127.0.0.1 (tests/stac_server.py); nothing touches the internet."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform_bounds
from rasterio.windows import from_bounds

from raster_helpers import write_geotiff
from s2landcover.acquisition.http import DownloadError, download_file, parse_multihash
from s2landcover.config import validate_config
from s2landcover.download import (
    band_scale_offset,
    choose_item,
    download_scene,
    download_worldcover,
    normalize_mgrs_tile,
    worldcover_tile_names,
)
from s2landcover.errors import InputError
from stac_server import FileFaults, StacTestServer, make_item

CRS = "EPSG:32631"
X0, Y0 = 399960.0, 4600020.0  # upper-left corner of the test tile (a Sentinel-2-like origin)
SIZE_10M = 96  # pixels of the 10 m bands (960 m)
BANDS_10M = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
BANDS_20M = {"B05": "rededge1", "B11": "swir16"}


@pytest.fixture(autouse=True)
def _no_proxy_for_the_local_server(monkeypatch):
    """urllib, requests and GDAL's curl honour proxy variables; the test server is local."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def _geotiff_bytes(path: Path, resolution: int, seed: int) -> bytes:
    size = SIZE_10M * 10 // resolution
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 10000, (size, size), dtype=np.uint16)
    transform = Affine(resolution, 0, X0, 0, -resolution, Y0)
    write_geotiff(path, data, transform, CRS, compress="deflate")
    return path.read_bytes()


def _sha256_multihash(data: bytes) -> str:
    return "1220" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def band_files(tmp_path_factory) -> dict[str, bytes]:
    """Tiny tiled GeoTIFFs per band (10 m: 96 x 96 px; 20 m: 48 x 48 px) on one UTM tile."""
    folder = tmp_path_factory.mktemp("assets")
    files = {}
    for i, band in enumerate([*BANDS_10M, *BANDS_20M]):
        resolution = 10 if band in BANDS_10M else 20
        files[band] = _geotiff_bytes(folder / f"{band}.tif", resolution, seed=i)
    return files


def _tile_bbox_wgs84() -> list[float]:
    extent = SIZE_10M * 10
    return list(transform_bounds(CRS, "EPSG:4326", X0, Y0 - extent, X0 + extent, Y0))


def _scene_item(
    server,
    item_id,
    when,
    cloud,
    band_files,
    prefix,
    tile_property="grid:code",
    scale_offset=True,
    properties=None,
):
    """An Earth-Search-v1-like item whose assets (common-name keys) the server serves."""
    assets = {}
    for band, data in band_files.items():
        key = {**BANDS_10M, **BANDS_20M}[band]
        name = f"{prefix}_{band}.tif"
        server.files[name] = data
        raster_band = {"nodata": 0, "data_type": "uint16"}
        if scale_offset:
            raster_band.update(scale=0.0001, offset=-0.1)
        assets[key] = {
            "href": server.file_url(name),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "file:size": len(data),
            "file:checksum": _sha256_multihash(data),
            "raster:bands": [raster_band],
        }
    tile = (
        {"grid:code": "MGRS-31TDF"} if tile_property == "grid:code" else {"s2:mgrs_tile": "31TDF"}
    )
    props = {**tile, "s2:processing_baseline": "05.09", **(properties or {})}
    return make_item(item_id, when, cloud, assets, _tile_bbox_wgs84(), props)


def _download_cfg(server, **overrides):
    cfg = validate_config({"download": {"api_url": server.url}})["download"]
    cfg.update(retries=3, timeout_s=5, backoff_s=0.01, area_of_interest_only=False)
    cfg.update(overrides)
    return cfg


SOURCE = {
    "type": "stac",
    "mgrs_tile": "31TDF",
    "date_range": ["2023-06-01", "2023-08-31"],
    "max_cloud_cover": 10,
}


def test_download_scene_chooses_least_cloud_most_recent_and_writes_band_folder(
    band_files, tmp_path
):
    with StacTestServer() as server:
        server.items = [
            _scene_item(server, "early-clear", "2023-06-10T10:56:00Z", 2.0, band_files, "a"),
            _scene_item(server, "late-clear", "2023-07-20T10:56:00Z", 2.0, band_files, "b"),
            _scene_item(server, "cloudy", "2023-07-25T10:56:00Z", 40.0, band_files, "c"),
            _scene_item(server, "out-of-range", "2023-09-05T10:56:00Z", 0.0, band_files, "d"),
        ]
        out = tmp_path / "downloads" / "scene1"
        bands = ["B02", "B03", "B04", "B08", "B05", "B11"]
        scene = download_scene(SOURCE, bands, _download_cfg(server), out)

    # least cloud, the tie broken by the most recent date; cloudy and out-of-range never chosen
    assert scene["item_id"] == "late-clear"
    assert scene["cloud_cover"] == 2.0
    for band in bands:
        assert (out / f"{band}.tif").read_bytes() == band_files[band]
    assert scene["scales"] == dict.fromkeys(bands, 0.0001)
    assert scene["offsets"] == dict.fromkeys(bands, -0.1)
    assert scene["nodata"] == 0
    on_disk = json.loads((out / "scene.json").read_text())
    assert on_disk["item_id"] == "late-clear" and on_disk["datetime"].startswith("2023-07-20")
    item = pystac.Item.from_dict(json.loads((out / "item.json").read_text()))
    assert item.id == "late-clear" and "blue" in item.assets
    # nothing else beside the folder: no staging folder, no temporary folder
    assert sorted(p.name for p in out.parent.iterdir()) == ["scene1"]
    # whole assets are fetched by plain GETs (no range requests needed)
    assert server.count("GET", "/files/b_", ranged=True) == 0
    assert server.count("GET", "/files/b_") == len(bands)


def test_search_by_s2_mgrs_tile_property_when_grid_code_finds_nothing(band_files, tmp_path):
    with StacTestServer() as server:
        server.items = [
            _scene_item(
                server,
                "pc-style",
                "2023-07-01T10:56:00Z",
                1.0,
                band_files,
                "a",
                tile_property="s2:mgrs_tile",
                scale_offset=False,
            )
        ]
        scene = download_scene(SOURCE, ["B02"], _download_cfg(server), tmp_path / "s")
        assert server.count("POST", "/search") == 2  # grid:code first, then s2:mgrs_tile
    assert scene["item_id"] == "pc-style"
    # no raster:bands scale/offset: the L2A baseline rule (05.09 >= 04.00) gives -0.1 and 1e-4
    assert scene["scales"]["B02"] == pytest.approx(1e-4)
    assert scene["offsets"]["B02"] == pytest.approx(-0.1)


def test_pinned_item_id_and_band_id_asset_keys(band_files, tmp_path):
    with StacTestServer() as server:
        item = _scene_item(server, "pinned", "2023-07-01T10:56:00Z", 80.0, band_files, "a")
        item["assets"]["B02"] = item["assets"].pop("blue")  # a catalogue keyed by band id
        server.items = [
            item,
            _scene_item(server, "other", "2023-07-02T10:56:00Z", 0.0, band_files, "b"),
        ]
        source = {"type": "stac", "item_id": "pinned"}
        scene = download_scene(source, ["B02"], _download_cfg(server), tmp_path / "s")
    assert scene["item_id"] == "pinned"  # the pin wins over the cloud limit and the choice rule
    assert (tmp_path / "s" / "B02.tif").read_bytes() == band_files["B02"]


def test_choose_item_rules_are_order_independent():
    def item(item_id, day, cloud):
        return pystac.Item.from_dict(
            make_item(item_id, f"2023-07-{day:02d}T10:00:00Z", cloud, {}, [0, 0, 1, 1])
        )

    items = [item("a", 5, 3.0), item("b", 20, 3.0), item("c", 25, 9.0), item("d", 1, 0.5)]
    for ordering in (items, items[::-1], items[1:] + items[:1]):
        assert choose_item(ordering, "least_cloud").id == "d"
        assert choose_item(ordering, "most_recent").id == "c"
    ties = [item("a", 5, 3.0), item("b", 20, 3.0)]
    assert choose_item(ties, "least_cloud").id == "b"  # equal cloud: the most recent
    same = [item("x1", 5, 3.0), item("x2", 5, 3.0)]
    assert choose_item(same, "least_cloud").id == choose_item(same[::-1], "least_cloud").id


def test_band_scale_offset_baseline_rule():
    def item(props, when="2023-07-01T10:00:00Z"):
        data = make_item("i", when, 1.0, {"blue": {"href": "x.tif"}}, [0, 0, 1, 1], props)
        return pystac.Item.from_dict(data)

    new = item({"s2:processing_baseline": "05.09"})
    old = item({"s2:processing_baseline": "03.01"})
    undated_old = item({}, when="2021-06-01T10:00:00Z")
    applied = item({"s2:processing_baseline": "05.09", "earthsearch:boa_offset_applied": True})
    assert band_scale_offset(new, new.assets["blue"], "B02") == (1e-4, -0.1)
    assert band_scale_offset(old, old.assets["blue"], "B02") == (1e-4, 0.0)
    assert band_scale_offset(undated_old, undated_old.assets["blue"], "B02") == (1e-4, 0.0)
    assert band_scale_offset(applied, applied.assets["blue"], "B02") == (1e-4, 0.0)
    assert band_scale_offset(new, new.assets["blue"], "SCL") == (1.0, 0.0)


def test_area_of_interest_read_equals_window_of_full_file(band_files, tmp_path):
    # a bbox around the middle of the tile, not aligned to any pixel
    aoi_utm = (X0 + 213.0, Y0 - 687.0, X0 + 571.0, Y0 - 254.0)
    bbox = list(transform_bounds(CRS, "EPSG:4326", *aoi_utm))
    with StacTestServer() as server:
        server.items = [_scene_item(server, "s", "2023-07-01T10:56:00Z", 1.0, band_files, "a")]
        source = {"type": "stac", "bbox": bbox, "date_range": ["2023-07-01", "2023-07-01"]}
        out = tmp_path / "aoi"
        scene = download_scene(
            source, ["B02", "B08", "B11"], _download_cfg(server, area_of_interest_only=True), out
        )
        assert server.count("GET", "/files/", ranged=False) == 0  # only HTTP range reads
        assert server.count("GET", "/files/", ranged=True) > 0
    assert scene["area_of_interest_only"] is True
    bounds = {}
    for band in ("B02", "B08", "B11"):
        full_path = tmp_path / f"full_{band}.tif"
        full_path.write_bytes(band_files[band])
        with rasterio.open(out / f"{band}.tif") as part, rasterio.open(full_path) as full:
            bounds[band] = tuple(part.bounds)
            assert part.res == full.res  # native grid kept (20 m stays 20 m)
            window = from_bounds(*part.bounds, transform=full.transform)
            assert window.col_off == int(window.col_off) and window.row_off == int(window.row_off)
            np.testing.assert_array_equal(part.read(1), full.read(1, window=window))
            assert part.descriptions[0] == band
            assert part.scales[0] == pytest.approx(1e-4) and part.offsets[0] == pytest.approx(-0.1)
    # the bbox grown to the 20 m grid: every band has the same bounds, and they contain the AOI
    assert bounds["B02"] == bounds["B08"] == bounds["B11"]
    left, bottom, right, top = bounds["B02"]
    assert (
        left <= aoi_utm[0] - 0.0
        and right >= aoi_utm[2]
        and bottom <= aoi_utm[1]
        and top >= aoi_utm[3]
    )
    assert (left - X0) % 20 == 0 and (Y0 - top) % 20 == 0
    assert right - left < SIZE_10M * 10  # not the whole tile


def test_download_file_retries_after_server_errors(tmp_path):
    payload = np.random.default_rng(0).bytes(20_000)
    with StacTestServer() as server:
        server.files["f.bin"] = payload
        server.faults["f.bin"] = FileFaults(fail_first=3)
        dest = download_file(
            server.file_url("f.bin"),
            tmp_path / "f.bin",
            retries=4,
            backoff=0.01,
            checksum=_sha256_multihash(payload),
        )
        assert server.count("GET", "/files/f.bin") == 4  # three 500s, then the file
    assert dest.read_bytes() == payload
    assert not (tmp_path / "f.bin.part").exists()


def test_download_file_gives_up_after_retries_and_names_the_url(tmp_path):
    with StacTestServer() as server:
        server.files["f.bin"] = b"x" * 100
        server.faults["f.bin"] = FileFaults(fail_first=10)
        with pytest.raises(DownloadError, match=r"f\.bin failed after 2 retries.*HTTP 500"):
            download_file(server.file_url("f.bin"), tmp_path / "f.bin", retries=2, backoff=0.01)
    assert not (tmp_path / "f.bin").exists()


def test_download_file_resumes_after_dropped_connection(tmp_path):
    payload = np.random.default_rng(1).bytes(300_000)
    with StacTestServer() as server:
        server.files["f.bin"] = payload
        server.faults["f.bin"] = FileFaults(drop_after=100_000)
        download_file(
            server.file_url("f.bin"),
            tmp_path / "f.bin",
            expected_size=len(payload),
            checksum=_sha256_multihash(payload),
            backoff=0.01,
        )
        ranged = [r for r in server.requests if r.range]
    assert (tmp_path / "f.bin").read_bytes() == payload
    assert [(r.range, r.status) for r in ranged] == [("bytes=100000-", 206)]


def test_download_file_restarts_when_server_ignores_range(tmp_path):
    payload = np.random.default_rng(2).bytes(50_000)
    with StacTestServer() as server:
        server.files["f.bin"] = payload
        server.faults["f.bin"] = FileFaults(drop_after=20_000, ignore_range=True)
        download_file(
            server.file_url("f.bin"), tmp_path / "f.bin", expected_size=len(payload), backoff=0.01
        )
        assert server.count("GET", "/files/f.bin", ranged=True) == 1  # asked, got 200: restarted
    assert (tmp_path / "f.bin").read_bytes() == payload


def test_download_file_resumes_a_partial_file_from_an_earlier_run(tmp_path):
    payload = np.random.default_rng(3).bytes(40_000)
    (tmp_path / "f.bin.part").write_bytes(payload[:25_000])  # left by an interrupted run
    with StacTestServer() as server:
        server.files["f.bin"] = payload
        download_file(
            server.file_url("f.bin"), tmp_path / "f.bin", checksum=_sha256_multihash(payload)
        )
        assert [r.range for r in server.requests] == ["bytes=25000-"]
    assert (tmp_path / "f.bin").read_bytes() == payload


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        (FileFaults(truncate_to=3000), r"received 3000 bytes, the catalogue says \d+ bytes"),
        (FileFaults(corrupt=True), r"sha256 is [0-9a-f]+, the catalogue says"),
    ],
    ids=["truncated", "corrupt"],
)
def test_corrupt_asset_fails_clearly_and_leaves_no_output(band_files, tmp_path, faults, message):
    with StacTestServer() as server:
        server.items = [_scene_item(server, "s", "2023-07-01T10:56:00Z", 1.0, band_files, "a")]
        server.faults["a_B03.tif"] = faults
        out = tmp_path / "downloads" / "scene1"
        with pytest.raises(DownloadError, match=message) as error:
            download_scene(SOURCE, ["B02", "B03"], _download_cfg(server), out)
    assert "/files/a_B03.tif" in str(error.value)
    assert not out.exists()
    # no half-written folder either: only the staging folder that a later run resumes from
    assert [p.name for p in out.parent.iterdir()] == [".scene1.download"]
    staged = {p.name for p in out.parent.glob(".scene1.download/*")}
    assert "B03.tif" not in staged and "B03.tif.part" not in staged  # nothing corrupt kept


def test_empty_search_says_what_was_searched(band_files, tmp_path):
    with StacTestServer() as server:
        server.items = [_scene_item(server, "s", "2023-07-01T10:56:00Z", 55.0, band_files, "a")]
        with pytest.raises(InputError) as error:
            download_scene(SOURCE, ["B02"], _download_cfg(server), tmp_path / "s")
    message = str(error.value)
    for text in (server.url, "sentinel-2-l2a", "31TDF", "2023-06-01", "2023-08-31", "<= 10 %"):
        assert text in message
    assert not (tmp_path / "s").exists()


def test_search_is_retried_on_503(band_files, tmp_path):
    with StacTestServer() as server:
        server.items = [_scene_item(server, "s", "2023-07-01T10:56:00Z", 1.0, band_files, "a")]
        server.search_failures = 2
        scene = download_scene(SOURCE, ["B02"], _download_cfg(server), tmp_path / "s")
        assert server.count("POST", "/search") == 3
    assert scene["item_id"] == "s"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"type": "stac"}, "needs mgrs_tile, bbox or item_id"),
        ({"type": "stac", "mgrs_tile": "31TD"}, "'31TD' is not an MGRS tile"),
        ({"type": "stac", "bbox": [3, 42, 2, 43]}, "EPSG:4326 degrees"),
        (
            {"type": "stac", "mgrs_tile": "31TDF", "date_range": ["2023-08-01", "2023-07-01"]},
            "before start",
        ),
        ({"type": "stac", "mgrs_tile": "31TDF", "tile": "x"}, r"unknown key\(s\) \['tile'\]"),
    ],
)
def test_bad_stac_source_is_an_input_error(source, message, tmp_path):
    cfg = validate_config({})["download"]
    with pytest.raises(InputError, match=message):
        download_scene(source, ["B02"], cfg, tmp_path / "s")


def test_mgrs_tile_forms_and_checksum_parsing():
    assert normalize_mgrs_tile("T31TDF") == normalize_mgrs_tile("MGRS-31TDF") == "31TDF"
    assert parse_multihash("1220" + "ab" * 32) == ("sha256", bytes.fromhex("ab" * 32))
    with pytest.raises(InputError, match="not supported"):
        parse_multihash("1401ff")


def _worldcover_tile(path: Path, lon0: int, lat0: int, value: int) -> bytes:
    size = 30  # 0.1 degree pixels: 3 degrees per tile
    data = np.full((size, size), value, dtype=np.uint8)
    data[:, :5] = 80
    write_geotiff(path, data, Affine(0.1, 0, lon0, 0, -0.1, lat0 + 3), "EPSG:4326")
    return path.read_bytes()


def test_download_worldcover_mosaic(tmp_path):
    bounds = [1.5, 40.5, 4.2, 41.0]  # crosses the 3-degree line at 3 E
    assert worldcover_tile_names(bounds) == ["N39E000", "N39E003"]
    with StacTestServer() as server:
        for name, lon0, value in (("N39E000", 0, 10), ("N39E003", 3, 40)):
            server.files[f"v200/2021/map/ESA_WorldCover_10m_2021_v200_{name}_Map.tif"] = (
                _worldcover_tile(tmp_path / f"{name}.tif", lon0, 39, value)
            )
        cfg = validate_config({})["download"]
        cfg.update(worldcover_url=f"{server.url}/files", retries=1, backoff_s=0.01, timeout_s=5)
        vrt = download_worldcover(bounds, tmp_path / "wc.vrt", 2021, cfg)
        local = download_worldcover([1.5, 40.5, 4.2, 41.0], tmp_path / "wc.tif", 2021, cfg)
        from s2landcover.acquisition.stac import remote_raster_env

        with remote_raster_env(1, 5, 0.01), rasterio.open(vrt) as mosaic:
            assert mosaic.width == 60 and mosaic.height == 30
            assert mosaic.bounds == pytest.approx((0, 39, 6, 42))
            whole = mosaic.read(1)
            window = from_bounds(*bounds, transform=mosaic.transform)
            window = window.round_offsets(op="floor").round_lengths(op="ceil")
            expected = mosaic.read(1, window=window)
    assert set(np.unique(whole)) == {10, 40, 80}
    with rasterio.open(local) as clip:
        assert clip.bounds.left <= 1.5 and clip.bounds.right >= 4.2 and clip.width < 60
        np.testing.assert_array_equal(clip.read(1), expected)


def test_bbox_search_prefers_items_covering_the_whole_bbox(band_files, tmp_path):
    full = _tile_bbox_wgs84()
    bbox = [full[0] + 0.001, full[1] + 0.001, full[2] - 0.001, full[3] - 0.001]
    with StacTestServer() as server:
        partial = _scene_item(server, "edge-of-swath", "2023-07-02T10:56:00Z", 0.0, band_files, "a")
        west_half = (full[0] + full[2]) / 2
        partial["geometry"]["coordinates"] = [
            [
                [full[0], full[1]],
                [west_half, full[1]],
                [west_half, full[3]],
                [full[0], full[3]],
                [full[0], full[1]],
            ]
        ]
        whole = _scene_item(server, "full-view", "2023-07-01T10:56:00Z", 5.0, band_files, "b")
        server.items = [partial, whole]
        source = {"type": "stac", "bbox": bbox, "date_range": ["2023-07-01", "2023-07-31"]}
        scene = download_scene(source, ["B02"], _download_cfg(server), tmp_path / "s")
    assert scene["item_id"] == "full-view"  # less cloud, but only half the bbox: not chosen


def test_checksum_mismatch_after_resume_refetches_from_scratch(tmp_path):
    payload = np.random.default_rng(4).bytes(30_000)
    stale = np.random.default_rng(5).bytes(10_000)  # a partial file of an older version of the file
    (tmp_path / "f.bin.part").write_bytes(stale)
    with StacTestServer() as server:
        server.files["f.bin"] = payload
        download_file(
            server.file_url("f.bin"), tmp_path / "f.bin", checksum=_sha256_multihash(payload)
        )
        assert [r.range for r in server.requests] == ["bytes=10000-", None]
    assert (tmp_path / "f.bin").read_bytes() == payload


@pytest.mark.parametrize("form", ["file_url", "absolute", "relative", "s3_whole_asset"])
def test_asset_hrefs_that_are_not_remote_are_refused(band_files, tmp_path, monkeypatch, form):
    """A catalogue may not make `download` copy a local file the user can read (issue 15 case 8)."""
    secret = tmp_path / "private" / "secret.tif"
    secret.parent.mkdir()
    secret.write_bytes(band_files["B02"])  # a readable raster: copying it would succeed
    monkeypatch.chdir(secret.parent)
    href = {
        "file_url": secret.as_uri(),
        "absolute": str(secret),
        "relative": "secret.tif",
        "s3_whole_asset": "s3://bucket/B02.tif",
    }[form]
    with StacTestServer() as server:
        item = _scene_item(server, "hostile", "2023-07-01T10:56:00Z", 1.0, band_files, "a")
        item["assets"]["blue"]["href"] = href
        server.items = [item]
        out = tmp_path / "downloads" / "s"
        with pytest.raises(InputError, match=r"STAC item hostile asset 'blue' has href") as error:
            download_scene(SOURCE, ["B02", "B03"], _download_cfg(server), out)
        assert server.count("GET", "/files/") == 0  # refused before anything was fetched
    assert href in str(error.value)
    if form == "s3_whole_asset":
        assert "area_of_interest_only" in str(error.value)
    assert not (tmp_path / "downloads").exists() or not any((tmp_path / "downloads").iterdir())


def test_file_href_refused_in_area_of_interest_reads(band_files, tmp_path):
    secret = tmp_path / "secret.tif"
    secret.write_bytes(band_files["B02"])
    with StacTestServer() as server:
        item = _scene_item(server, "hostile", "2023-07-01T10:56:00Z", 1.0, band_files, "a")
        item["assets"]["green"]["href"] = secret.as_uri()
        server.items = [item]
        cfg = _download_cfg(server, area_of_interest_only=True)
        source = {"type": "stac", "item_id": "hostile", "bbox": _tile_bbox_wgs84()}
        with pytest.raises(InputError, match=r"hostile asset 'green' has href 'file://"):
            download_scene(source, ["B02", "B03"], cfg, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_downloader_and_remote_reader_refuse_local_urls(tmp_path):
    from s2landcover.acquisition.stac import remote_grid

    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    with pytest.raises(InputError, match=r"not an http:// or https:// URL"):
        download_file(secret.as_uri(), tmp_path / "copy.txt")
    with pytest.raises(InputError, match=r"not an http://, https:// or s3:// URL"):
        remote_grid(str(secret))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.txt"]


def test_a_failing_server_is_an_acquisition_error_not_an_input_error(tmp_path, capsys):
    """Network failures read as "retry later" (exit 3), user mistakes as "fix your input" (2)."""
    from s2landcover import cli
    from s2landcover.errors import AcquisitionError

    assert issubclass(DownloadError, AcquisitionError)
    assert not issubclass(DownloadError, InputError)
    config = tmp_path / "c.yaml"
    config.write_text(
        "scenes:\n  - name: s\n    source:\n      type: stac\n      mgrs_tile: 31TDF\n"
        "      bbox: [2.05, 41.30, 2.25, 41.45]\n      date_range: [2024-01-01, 2024-01-31]\n"
        "download:\n  api_url: http://127.0.0.1:9/\n  retries: 0\n  backoff_s: 0.01\n"
        "  timeout_s: 2\n"
    )
    status = cli.main(
        ["download", "--config", str(config), "--scene", "s", "--out-dir", str(tmp_path / "d")]
    )
    assert status == 3, capsys.readouterr().err
    assert "remote source failed" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
