"""The IIIF info.json document (Image API 2.1 and 3.0), a pure function of the image."""

from __future__ import annotations

from typing import Any

import imagecodecs

from ..model import ImageInfo
from ..settings import Settings

PHYSDIM_CONTEXT = "http://iiif.io/api/annex/services/physdim/1/context.json"
PHYSDIM_PROFILE = "http://iiif.io/api/annex/services/physdim"

# Features beyond what the level-2 profile already promises (3.0) / everything (2.1).
V3_EXTRA_FEATURES = ["canonicalLinkHeader", "mirroring", "profileLinkHeader", "rotationArbitrary"]
V2_FEATURES = [
    "baseUriRedirect",
    "canonicalLinkHeader",
    "jsonldMediaType",
    "mirroring",
    "profileLinkHeader",
    "regionByPct",
    "regionByPx",
    "regionSquare",
    "rotationArbitrary",
    "rotationBy90s",
    "sizeByConfinedWh",
    "sizeByDistortedWh",
    "sizeByH",
    "sizeByPct",
    "sizeByW",
    "sizeByWh",
]


def served_formats() -> list[str]:
    """IIIF format names this build can write: AVIF only when imagecodecs has an encoder."""
    formats = ["jpg", "png", "webp"]
    if imagecodecs.AVIF.available:
        formats.append("avif")
    formats.append("tif")
    return formats


def qualities(info: ImageInfo, settings: Settings) -> list[str]:
    found = (["color"] if info.channels >= 3 else []) + ["gray", "bitonal"]
    if settings.iiif_extensions:
        found += ["negative", "stretch", "equalization", "log"]
    return found


def sizes(info: ImageInfo, limit: int) -> list[dict[str, int]]:
    """Every stored level but the full one, smallest first, within MAX_CVT."""
    return [
        {"width": level.width, "height": level.height}
        for level in reversed(info.levels[1:])
        if not limit or max(level.width, level.height) <= limit
    ]


def tiles(info: ImageInfo) -> list[dict[str, Any]]:
    """One entry per tile shape, with each level's real downsample rounded to an integer."""
    shapes: dict[tuple[int, int], list[int]] = {}
    for level in info.levels:
        factors = shapes.setdefault((level.tile_width, level.tile_height), [])
        factor = max(1, round(level.downsample_x))
        if factor not in factors:
            factors.append(factor)
    return [{"width": w, "height": h, "scaleFactors": sorted(factors)} for (w, h), factors in shapes.items()]


def _rights(info: ImageInfo, settings: Settings) -> str:
    return info.meta("rights") or settings.copyright


def _is_uri(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _physical(info: ImageInfo, image_id: str, version: int) -> list[dict[str, Any]]:
    if not info.dpi:
        return []
    service: dict[str, Any] = {
        "@context": PHYSDIM_CONTEXT,
        "profile": PHYSDIM_PROFILE,
        "physicalScale": 100.0 / info.dpi[0],  # centimetres per pixel
        "physicalUnits": "cm",
    }
    if version >= 3:
        service = {"id": image_id + "#physdim", "type": "PhysicalDimensions", **service}
    else:
        service["@id"] = image_id + "#physdim"
    return [service]


def build(info: ImageInfo, image_id: str, version: int, settings: Settings) -> dict[str, Any]:
    limit = settings.max_cvt if settings.max_cvt > 0 and max(info.width, info.height) > settings.max_cvt else 0
    rights = _rights(info, settings)
    services = _physical(info, image_id, version)
    if version >= 3:
        doc: dict[str, Any] = {
            "@context": "http://iiif.io/api/image/3/context.json",
            "id": image_id,
            "type": "ImageService3",
            "protocol": "http://iiif.io/api/image",
            "profile": "level2",
            "width": info.width,
            "height": info.height,
        }
        if limit:
            doc["maxWidth"] = doc["maxHeight"] = limit
        doc["sizes"] = sizes(info, limit)
        doc["tiles"] = tiles(info)
        doc["extraQualities"] = qualities(info, settings)
        doc["extraFormats"] = [f for f in served_formats() if f not in ("jpg", "png")]
        # IIIF 3.0 section 5.7: sizeUpscaling must come with maxWidth or maxArea.  "^" requests
        # are served either way; the feature is only announced when a limit is announced too.
        features = [*V3_EXTRA_FEATURES, *(["sizeUpscaling"] if settings.allow_upscaling and limit else [])]
        doc["extraFeatures"] = features
        if rights and _is_uri(rights):
            doc["rights"] = rights
        if services:
            doc["service"] = services
        return doc
    # CORS headers are only sent when CORS is set, so only then is the feature claimed.
    supports = [*V2_FEATURES, *(["cors"] if settings.cors else [])]
    supports += ["sizeAboveFull"] if settings.allow_upscaling else []
    profile: dict[str, Any] = {
        "formats": served_formats(),
        "qualities": ["default", *qualities(info, settings)],
        "supports": sorted(supports),
    }
    if limit:
        profile["maxWidth"] = profile["maxHeight"] = limit
    doc = {
        "@context": "http://iiif.io/api/image/2/context.json",
        "@id": image_id,
        "protocol": "http://iiif.io/api/image",
        "width": info.width,
        "height": info.height,
        "sizes": sizes(info, limit),
        "tiles": tiles(info),
        "profile": ["http://iiif.io/api/image/2/level2.json", profile],
    }
    if rights:
        doc["license" if _is_uri(rights) else "attribution"] = rights
    if services:
        doc["service"] = services[0] if len(services) == 1 else services
    return doc
