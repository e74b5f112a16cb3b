"""The one exception hierarchy and the one status table.

Every failure a request can meet is one of these exceptions by the time it reaches the
application's single error handler (``app.py``).  Third-party exceptions (tifffile,
imagecodecs, OS errors) are translated where they are raised, at the sources/storage
boundary, with ``raise ... from`` so the log keeps the cause.

The text given to the constructor is what the client sees: it must never contain a server
path or a stack trace.  Details for the log go in ``log_detail``.
"""

from __future__ import annotations

# Reason phrases for every status this server sends.
STATUS_TEXT: dict[int, str] = {
    200: "OK",
    204: "No Content",
    303: "See Other",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def status_line(status: int) -> str:
    return f"{status} {STATUS_TEXT.get(status, 'Unknown')}"


class ServerError(Exception):
    """Base of every error that becomes an HTTP response.  Default: 500.

    ``api_code`` names the error on the slide REST API (``{"error": code, ...}``) when it is more
    precise than its class's (``invalid_quality`` for a BadRequest); see ``rest_code``.
    """

    status = 500

    def __init__(self, message: str = "", log_detail: str = "", api_code: str = "") -> None:
        super().__init__(message or STATUS_TEXT[self.status])
        self.message = message or STATUS_TEXT[self.status]
        self.log_detail = log_detail
        self.api_code = api_code

    def __str__(self) -> str:
        if self.log_detail:
            return f"{self.message} ({self.log_detail})"
        return self.message


class BadRequest(ServerError):
    """Syntax error in a IIIF, DeepZoom, Zoomify or REST request."""

    status = 400


class NotFound(ServerError):
    """Unknown image, refused identifier, or a tile/level out of range."""

    status = 404


class MethodNotAllowed(ServerError):
    """A method the route does not answer (POST on the REST API)."""

    status = 405


class TooLarge(ServerError):
    """The requested output is larger than the server allows."""

    status = 413


class RequestTooLong(ServerError):
    """A request string longer than MAX_REQUEST_LENGTH (nginx refuses a request line over its
    header buffers with the same status)."""

    status = 414


class UnsupportedImage(ServerError):
    """The file exists but is not an image this server can read."""

    status = 415


class ImageDecodeError(ServerError):
    """A readable image whose pixel data (one tile, one strip) is broken."""

    status = 500


class StorageUnavailable(ServerError):
    status = 502


class StorageBusy(ServerError):
    status = 503


class RequestTimeout(ServerError):
    """The request ran past REQUEST_TIMEOUT: it fails alone, the worker goes on."""

    status = 503


class StorageTimeout(ServerError):
    status = 504


# The signed-URL refusals (WSI Streamer's codes) and their statuses.
SIGNATURE_ERRORS: dict[str, int] = {
    "missing_signature": 401,
    "missing_expiry": 401,
    "signature_expired": 401,
    "invalid_signature": 401,
    "invalid_signature_format": 400,
    "invalid_expiry_format": 400,
}


class SignatureError(ServerError):
    """A request refused by the signed-URL check (``auth.py``): 400 when ``sig`` or ``exp`` is
    malformed or repeated, 401 when either is missing, expired or wrong.

    Answered on every path as JSON ``{"error": code, "message": text, "status": n}`` with
    ``Cache-Control: no-store``, and never cached.
    """

    def __init__(self, code: str, message: str) -> None:
        self.status = SIGNATURE_ERRORS[code]
        super().__init__(message, api_code=code)  # the body is rest_body's, as on the REST routes

    @property
    def code(self) -> str:
        return self.api_code


class IIPError(ServerError):
    """An IIP protocol error: ``Error/<len>:<code> <arg>`` with status 400.

    Codes used (SPEC section 3): ``1 3`` image not set, ``2 1`` malformed request,
    ``2 2`` unsupported command, ``3 2`` unsupported object.
    """

    status = 400

    def __init__(self, code: str, arg: str) -> None:
        # The argument echoes client input; keep it printable and bounded so the error
        # body can never smuggle control characters or grow without limit.
        arg = "".join(ch if ch.isprintable() else "?" for ch in arg)[:256]
        super().__init__(f"{code} {arg}".rstrip())
        self.code = code
        self.arg = arg

    def body(self) -> bytes:
        text = self.message.encode("utf-8")
        return b"Error/%d:" % len(text) + text + b"\r\n"


def image_not_set(command: str) -> IIPError:
    return IIPError("1 3", command)


def malformed(what: str) -> IIPError:
    return IIPError("2 1", what)


def unsupported_command(name: str) -> IIPError:
    return IIPError("2 2", name)


def unsupported_object(name: str) -> IIPError:
    return IIPError("3 2", name.lower())


# -- the slide REST API's error codes (WSI Streamer's names) ---------------------------------------

# The code of each class, most specific first; an error's own ``api_code`` takes precedence.
REST_CODES: tuple[tuple[type[ServerError], str], ...] = (
    (IIPError, "bad_request"),
    (BadRequest, "bad_request"),
    (NotFound, "not_found"),
    (MethodNotAllowed, "method_not_allowed"),
    (TooLarge, "too_large"),
    (RequestTooLong, "uri_too_long"),
    (RequestTimeout, "timeout"),
    (UnsupportedImage, "unsupported_format"),
    (ImageDecodeError, "decode_error"),
    (StorageUnavailable, "connection_error"),
    (StorageBusy, "storage_busy"),
    (StorageTimeout, "timeout"),
)


def rest_code(exc: ServerError) -> str:
    """``not_found``, ``invalid_level``, ``connection_error``...: the ``error`` of a REST answer."""
    if exc.api_code:
        return exc.api_code
    for kind, code in REST_CODES:
        if isinstance(exc, kind):
            return code
    return "internal_error"


def rest_body(exc: ServerError) -> dict[str, object]:
    """The JSON error of the REST routes: ``{"error", "message", "status"}`` (client-safe text)."""
    return {"error": rest_code(exc), "message": exc.message, "status": exc.status}
