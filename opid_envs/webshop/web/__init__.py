"""The human-facing web page of the WebShop store (flask)."""

from opid_envs.webshop.web.app import create_app, main

__all__ = ["create_app", "main"]
