"""Settings from the environment: iipsrv names and defaults, clamping, refusals that name the variable."""

from __future__ import annotations

import pytest

from iipsrv_py.settings import Settings, SettingsError, from_environ, parse_uri_map


def test_defaults_are_iipsrvs() -> None:
    settings, warnings = from_environ({})
    assert warnings == []
    assert (settings.jpeg_quality, settings.png_quality, settings.max_cvt) == (75, 1, 5000)
    assert settings.max_image_cache_mb == 10.0
    assert settings.max_metadata_cache == 1000
    assert settings.cache_control == "max-age=86400"
    assert settings.filename_pattern == "_pyr_"
    assert settings.codec_passthrough and settings.allow_upscaling
    assert settings.iiif_version == 3 and settings.max_layers == -1
    assert settings.tiff_compression == 2


def test_values_are_read() -> None:
    settings, _ = from_environ(
        {
            "JPEG_QUALITY": "90",
            "FILESYSTEM_PREFIX": "/images/",
            "CORS": "*",
            "MAX_CVT": "-1",
            "ALLOW_UPSCALING": "0",
            "MAX_IMAGE_METADATA_CACHE_SIZE": "12",
        }
    )
    assert settings.jpeg_quality == 90
    assert settings.filesystem_prefix == "/images/"
    assert settings.cors == "*"
    assert settings.max_cvt == -1
    assert settings.allow_upscaling is False
    assert settings.max_metadata_cache == 12  # the documented alias


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("JPEG_QUALITY", "500", 100), ("JPEG_QUALITY", "0", 1), ("PNG_QUALITY", "12", 9), ("VERBOSITY", "9", 6)],
)
def test_out_of_range_numbers_are_clamped_and_reported(name: str, value: str, expected: int) -> None:
    settings, warnings = from_environ({name: value})
    assert getattr(settings, name.lower()) == expected
    assert len(warnings) == 1 and name in warnings[0]


@pytest.mark.parametrize(
    ("name", "value"),
    [("JPEG_QUALITY", "high"), ("MAX_CVT", "1e"), ("CODEC_PASSTHROUGH", "maybe"), ("URI_MAP", "iiif=>Nope")],
)
def test_unparseable_values_stop_with_the_variable_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name.split("_")[0]):
        from_environ({name: value})


def test_uri_map_accepts_several_mappings_longest_prefix_first() -> None:
    mapping = parse_uri_map("iiif=>IIIF, deepzoom=>deepzoom zoomify=>ZOOMIFY /iiif/v2/=>iiif")
    assert set(mapping) == {("deepzoom", "DeepZoom"), ("iiif/v2", "IIIF"), ("zoomify", "Zoomify"), ("iiif", "IIIF")}
    prefixes = [prefix for prefix, _ in mapping]
    assert prefixes.index("iiif/v2") < prefixes.index("iiif")


def test_fingerprint_changes_with_rendering_settings_only() -> None:
    base = Settings()
    assert Settings(jpeg_quality=90).fingerprint != base.fingerprint
    assert Settings(verbosity=5, workers=3).fingerprint == base.fingerprint
