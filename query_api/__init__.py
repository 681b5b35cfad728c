"""The HTTP query API: the seed's read and write endpoints, OpenAPI, metrics and health.

``create_app(settings)`` builds the aiohttp application; ``python -m query_api`` serves it.
"""

from .app import create_app

__all__ = ["create_app"]
