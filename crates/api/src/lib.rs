//! caio-api: the HTTP API.
