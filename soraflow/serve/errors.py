"""HTTP errors of the server: one JSON shape (OpenAI's), one line of message, a 4xx code for the client's
mistakes, and a body even for a 500."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An error response: ``status``, a one-line ``message``, OpenAI's error ``type``, extra headers."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", *,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type, param
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.type, param=self.param, headers=self.headers)


def error_response(status: int, message: str, type: str = "invalid_request_error", *, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


__all__ = ["ApiError", "error_response"]
