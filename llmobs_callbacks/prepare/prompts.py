"""Content-addressed prompt versions: the same template text always gives the same version.

Adapters extract a template's text (each message's role and template, in order); this module
turns it into a stable fingerprint. A declared ``prompt_version`` always wins over it.
"""

from __future__ import annotations

import hashlib

from ..model import PromptTemplate

DERIVED_VERSION_LENGTH = 12


def template_hash(template_text: str) -> str:
    return hashlib.sha256(template_text.encode("utf-8", "surrogatepass")).hexdigest()


def derived_version(template_hash_hex: str) -> str:
    """The version shown where the user declared none: a short, stable prefix of the hash."""
    return template_hash_hex[:DERIVED_VERSION_LENGTH]


def prompt_identity(
    template_text: str | None,
    name: str | None,
    declared_name: str | None = None,
    declared_version: str | None = None,
) -> PromptTemplate:
    """The prompt a run used: declared name/version first, fingerprint of the template otherwise."""
    digest = template_hash(template_text) if template_text is not None else None
    version = declared_version or (derived_version(digest) if digest else None)
    return PromptTemplate(
        prompt_name=declared_name or name,
        prompt_version=version,
        template_hash=digest,
        template=template_text,
    )
