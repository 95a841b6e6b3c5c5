"""HTTP route modules; each registers its endpoints with `gateway.http.api.endpoint` when imported."""
