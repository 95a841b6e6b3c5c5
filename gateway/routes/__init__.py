"""HTTP route modules; each exports `routes() -> list[BaseRoute]` and `build_app` mounts them all."""
