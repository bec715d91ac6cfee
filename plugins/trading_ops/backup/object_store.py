"""The repository on S3-compatible object storage: credentials from an Airflow `aws` connection, uploads checked.

The connection (`backup.repository_conn_id`) holds the access key id as login and the secret as password; its
extra may hold `endpoint_url` (MinIO, Ceph, a local test server) and `region_name`. Neither ever reaches the policy,
a log line or an argv: they go from the connection straight into the s3fs client.

Uploads of `backup.multipart_chunk` or more go in parts of exactly that size (`fixed_upload_size`), so the ETag the
store answers after the upload (the MD5 of the parts' MD5s for a multipart upload, the MD5 of the body for a single
PUT) can be recomputed from the bytes sent: `UploadCheck` compares it, and the size, once the file is complete. A
store that encrypts with KMS keys answers other ETags; such a bucket is not supported.

Errors of the store become one sentence naming the repository and the connection: refused credentials are a
`RepositoryAccessError` (a user error: fix the connection), anything else a `StoreError` (operational: retried).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Generator

from trading_ops.errors import UserError

# Error codes S3-compatible stores answer for credentials that are wrong or lack the rights.
ACCESS_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}


class RepositoryAccessError(UserError):
    """The store refused the connection's credentials: fix the connection."""


class StoreError(RuntimeError):
    """The store failed a request (an error answer, a dropped connection): operational, retried."""


class MissingConnection(UserError):
    pass


def storage_options(conn_id: str, chunk_size: int) -> dict:
    """s3fs options from the `aws` connection `conn_id`."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise MissingConnection(
            f"The object-storage backup repository needs the Airflow connection {conn_id} "
            "(type aws: access key id as login, secret as password), which is not defined."
        ) from None
    extra = conn.extra_dejson
    client_kwargs = {"region_name": extra["region_name"]} if extra.get("region_name") else {}
    return {
        "key": conn.login or None,
        "secret": conn.password or None,
        "endpoint_url": extra.get("endpoint_url") or None,
        "client_kwargs": client_kwargs,
        # botocore's Config (retries, timeouts), as the Amazon provider reads it from an aws connection's extra.
        "config_kwargs": extra.get("config_kwargs") or {},
        "default_block_size": chunk_size,
        "fixed_upload_size": True,
        # A connection edited in Airflow takes effect at once, not when the process restarts.
        "skip_instance_cache": True,
        # Every listing asks the store: the repository's paths share one filesystem (and client), and another
        # process (a backup, a retention run) may have changed the store since this one last looked.
        "use_listings_cache": False,
    }


def _error_code(exc: BaseException) -> str | None:
    for candidate in (exc, exc.__cause__, exc.__context__):
        response = getattr(candidate, "response", None)
        if isinstance(response, dict):
            return response.get("Error", {}).get("Code")
    return None


def _reason(exc: BaseException) -> str:
    code = _error_code(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{code}: {text}" if code and code not in text else text


@contextlib.contextmanager
def store_errors(root, conn_id: str, action: str) -> Generator[None]:
    """Turn a failure of the store during `action` into one sentence naming the repository and the connection."""
    try:
        yield
    except (UserError, StoreError):
        raise
    except Exception as exc:
        code = _error_code(exc)
        if isinstance(exc, PermissionError) or code in ACCESS_CODES:
            raise RepositoryAccessError(
                f"The backup repository {root} refused the credentials of connection {conn_id} while {action} "
                f"({code or 'access denied'}): check the connection's login, password and endpoint_url."
            ) from None
        if isinstance(exc, FileNotFoundError) and code in (None, "NoSuchBucket"):
            if "bucket" in str(exc).lower() or code == "NoSuchBucket":
                raise RepositoryAccessError(
                    f"The bucket of the backup repository {root} does not exist (connection {conn_id})."
                ) from None
            raise
        if isinstance(exc, (OSError, ConnectionError, TimeoutError)) or code or _is_client_error(exc):
            raise StoreError(
                f"The backup repository {root} (connection {conn_id}) failed while {action}: {_reason(exc)}."
            ) from exc
        raise


def _is_client_error(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith(("botocore", "aiobotocore", "aiohttp", "s3fs"))


class UploadCheck:
    """Fed the bytes of one upload, knows the ETag and size the store must answer for it."""

    def __init__(self, chunk_size: int):
        self.chunk_size = chunk_size
        self.size = 0
        self._part = hashlib.md5(usedforsecurity=False)
        self._part_size = 0
        self._parts: list[bytes] = []

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.chunk_size - self._part_size)
            self._part.update(view[:take])
            self._part_size += take
            self.size += take
            view = view[take:]
            if self._part_size == self.chunk_size:
                self._parts.append(self._part.digest())
                self._part = hashlib.md5(usedforsecurity=False)
                self._part_size = 0

    def expected_etag(self) -> str:
        if self.size < self.chunk_size:
            return self._part.hexdigest()
        parts = self._parts + ([self._part.digest()] if self._part_size else [])
        return f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"

    def check(self, path) -> None:
        """Compare what the store holds at `path` with what was sent; raise StoreError on a difference."""
        info = path.fs.info(path.path, refresh=True)
        etag = str(info.get("ETag", "")).strip('"')
        if info.get("size") != self.size or etag != self.expected_etag():
            raise StoreError(
                f"The upload of {path} does not match what was sent (store: {info.get('size')} bytes, ETag {etag}; "
                f"sent: {self.size} bytes, ETag {self.expected_etag()})."
            )


class CheckedUpload:
    """A write-only file on object storage whose bytes are also fed to an `UploadCheck`."""

    def __init__(self, handle, check: UploadCheck):
        self._handle = handle
        self._check = check

    def write(self, data) -> int:
        self._check.feed(bytes(data))
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()
