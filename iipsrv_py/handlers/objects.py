"""IIP OBJ objects (SPEC section 5): pure functions of the image description.

Each object yields lines of the response body (without their ``\\r\\n``) and possibly a
content type; ``None`` for the image means FIF has not been given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..errors import image_not_set, unsupported_object
from ..model import ImageInfo

IIP_SERVER = "IIP-server:3.65"
# The IIP protocol version this server speaks, sent as the IIP header for OBJ=IIP,<version>.
IIP_PROTOCOL_VERSION = "1.0"
OPT_COMMANDS = "IIP-opt-comm:CVT QLT JTL JTLS WID HEI RGN SDS"
OPT_OBJECTS = (
    "IIP-opt-obj:Horizontal-views Vertical-views Tile-size Bits-per-channel Min-Max-sample-values "
    "Resolutions Resolution-number DPI Basic-info Summary-info"
)
# Metadata objects answered with the raw value of the key of the same name.
METADATA_OBJECTS = frozenset(
    (
        "rights",
        "title",
        "description",
        "creator",
        "keywords",
        "comment",
        "last-author",
        "rev-number",
        "edit-time",
        "last-printed",
        "date",
        "last-save-dtm",
        "software",
        "make",
        "model",
        "xmp",
        "scale",
        "pagename",
    )
)
SUMMARY_KEYS = ("rights", "description", "creator", "date", "software")


@dataclass
class ObjectOutput:
    lines: list[str] = field(default_factory=list)
    content_type: str | None = None
    protocol: str | None = None  # value of the IIP response header


def metadata_value(info: ImageInfo, key: str, copyright_default: str) -> str:
    value = info.meta(key)
    if not value and key == "rights":
        value = copyright_default
    return value


def colorspace_line(info: ImageInfo) -> str:
    if info.colorspace == "cielab":
        calibrated, code, planes = 1, 4, "3 0 1 2"
    elif info.colorspace == "grey":
        calibrated, code, planes = 0, 1, "1 0"
    else:
        calibrated, code, planes = 0, 3, "3 0 1 2"
    return f"Colorspace,0-{len(info.levels) - 1},0:{calibrated} 0 {code} {planes}"


def _views(name: str, views: tuple[int, ...]) -> str:
    return f"{name}:" + " ".join(str(v) for v in views)


def _min_max(info: ImageInfo) -> str:
    text = "".join(f" {lo:.9g}  {hi:.9g} " for lo, hi in zip(info.min_values, info.max_values, strict=True))
    return "Min-Max-sample-values:" + text[:-1]


def _resolutions(info: ImageInfo) -> str:
    return "Resolutions:" + ",".join(f"{lvl.width} {lvl.height}" for lvl in reversed(info.levels))


def _metadata_json(info: ImageInfo, copyright_default: str) -> str:
    values = {key: value for key, value in info.metadata if key not in ("icc", "xmp") and value}
    if copyright_default and not values.get("rights"):
        values["rights"] = copyright_default
    return json.dumps(dict(sorted(values.items())), ensure_ascii=False, indent=1)


def render(name: str, info: ImageInfo | None, copyright_default: str, rotation: float = 0.0) -> ObjectOutput:
    """Lines for ``OBJ=<name>`` (``name`` already lower-cased)."""
    out = ObjectOutput()
    if name.startswith("iip,"):
        # Our version, whatever the client's: echoing its text would put client bytes (CR, LF,
        # non-latin-1 characters) into a response header.
        out.protocol = IIP_PROTOCOL_VERSION
        return out
    if name == "iip-server":
        out.lines.append(IIP_SERVER)
        return out
    if name == "iip-opt-comm":
        out.lines.append(OPT_COMMANDS)
        return out
    if name == "iip-opt-obj":
        out.lines.append(OPT_OBJECTS)
        return out
    known = name in _IMAGE_OBJECTS or name in METADATA_OBJECTS or "colorspace" in name
    if name not in ("summary-info", "metadata", "stack") and not known:
        raise unsupported_object(name)
    if info is None:
        raise image_not_set("OBJ")
    if name in METADATA_OBJECTS:
        value = metadata_value(info, name, copyright_default)
        if value:
            out.lines.append(value)
            out.content_type = "application/xml" if name == "xmp" else "text/plain; charset=utf-8"
    elif name == "summary-info":
        out.lines.extend(v for v in (metadata_value(info, k, copyright_default) for k in SUMMARY_KEYS) if v)
    elif name == "metadata":
        out.lines.append(_metadata_json(info, copyright_default))
        out.content_type = "application/json"
    elif name == "stack":
        if len(info.pages) > 1:
            pages = [{"id": i, "name": page, "scale": 1} for i, page in enumerate(info.pages)]
            out.lines.append(json.dumps(pages, ensure_ascii=False))
            out.content_type = "application/json"
    elif "colorspace" in name:
        out.lines.append(colorspace_line(info))
    else:
        out.lines.extend(_IMAGE_OBJECTS[name](info, rotation))
    return out


def _max_size(info: ImageInfo, rotation: float) -> list[str]:
    w, h = info.width, info.height
    if int(rotation) % 180 == 90:
        w, h = h, w
    return [f"Max-size:{w} {h}"]


def _dpi(info: ImageInfo) -> list[str]:
    return [f"DPI:{info.dpi[0]:f} {info.dpi[1]:f}"] if info.dpi else []


_IMAGE_OBJECTS = {
    "max-size": _max_size,
    "resolution-number": lambda info, _: [f"Resolution-number:{len(info.levels)}"],
    "tile-size": lambda info, _: [f"Tile-size:{info.levels[0].tile_width} {info.levels[0].tile_height}"],
    "bits-per-channel": lambda info, _: [f"Bits-per-channel:{info.bits_per_sample}"],
    "horizontal-views": lambda info, _: [_views("Horizontal-views", info.horizontal_views)],
    "vertical-views": lambda info, _: [_views("Vertical-views", info.vertical_views)],
    "min-max-sample-values": lambda info, _: [_min_max(info)],
    "resolutions": lambda info, _: [_resolutions(info)],
    "dpi": lambda info, _: _dpi(info),
    "basic-info": lambda info, rotation: [
        IIP_SERVER,
        *_max_size(info, rotation),
        f"Resolution-number:{len(info.levels)}",
        colorspace_line(info),
    ],
}
