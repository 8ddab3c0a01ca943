"""Cache on Memorystore for Redis (gcp profile).

Memorystore *is* Redis, so this is :class:`RedisCache` with the two things a Memorystore instance
adds: an AUTH string and in-transit encryption (TLS on port 6378, verified against the instance's
server CA, downloaded from the instance as a PEM file). The cache operations are RedisCache's.
"""

from __future__ import annotations

import redis
from pydantic import Field

from farm_dagster.resources.cache_redis import RedisCache


class MemorystoreCache(RedisCache):
    # A plain str: Dagster config has no secret type; in Definitions pass EnvVar(...) so the value
    # is read at run time and never shown in the UI.
    auth_string: str | None = Field(None, description="Memorystore AUTH string (kept out of the URL)")
    server_ca_path: str | None = Field(None, description="PEM of the instance's server CA (TLS instances)")
    tls: bool | None = Field(None, description="force TLS on/off; default: on for rediss:// URLs or a CA")
    tls_check_hostname: bool = Field(True, description="verify that the certificate names the host dialled")

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            options: dict[str, object] = {
                "socket_timeout": self.socket_timeout_seconds,
                "socket_connect_timeout": self.socket_timeout_seconds,
            }
            if self.auth_string is not None:
                options["password"] = self.auth_string
            use_tls = (
                self.tls
                if self.tls is not None
                else (self.url.startswith("rediss://") or bool(self.server_ca_path))
            )
            if use_tls:
                options.update(
                    connection_class=redis.SSLConnection,
                    ssl_cert_reqs="required",
                    ssl_ca_certs=self.server_ca_path,
                    ssl_check_hostname=self.tls_check_hostname,
                )
            self._client = redis.Redis.from_url(self.url, **options)
        return self._client
