"""What each destination may see: the configured redaction applied to everything leaving the store.

One :class:`PrivacyPolicy` is built per run from the configuration (``privacy.patterns`` and each
destination's ``keep_in_clear``). The outbox drain passes every item through :meth:`item` before
a destination sees it, and destinations that read text from the store themselves (a GitHub
issue listing earlier mentions, Slack messages updated after a review) pass it through
:meth:`text`. Card numbers are masked before they are stored (:mod:`triage.privacy.storage`), so no
destination can keep them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from triage.config import Config
from triage.keys import stable_key
from triage.models import Author, DeliveryItem
from triage.privacy.redact import Redactor


class PrivacyPolicy:
    """The redactor of a configuration and the kinds each destination keeps in clear.

    Args:
        config: The validated configuration.

    Raises:
        ValueError: A pattern or a destination's ``keep_in_clear`` is invalid (the configuration
            loader reports these first, with the file and line).
    """

    def __init__(self, config: Config) -> None:
        self.redactor = Redactor(custom=config.privacy.patterns)
        self._keep = {
            name: self.redactor.check_keep(config.keep_in_clear(name))
            for name in config.destinations
        }

    def keep(self, destination: str | None) -> frozenset[str]:
        """Kinds ``destination`` sees in clear (none for an unknown destination)."""
        return self._keep.get(destination or "", frozenset())

    def text(self, value: str, destination: str | None) -> str:
        """``value`` as ``destination`` may see it: placeholders for every kind it does not keep."""
        return self.redactor.redact(value, self.keep(destination))

    def optional(self, value: str | None, destination: str | None) -> str | None:
        """:meth:`text` for a value that may be missing."""
        return None if value is None else self.text(value, destination)

    def link(self, value: str | None, destination: str | None) -> str | None:
        """A URL, or None when it carries personal data the destination may not see.

        Links are dropped rather than rewritten: ``mailto:[email]`` is of use to nobody, and
        the digits of a post's id must not be taken apart by the phone or card rules.
        """
        if value is None:
            return None
        keep = self.keep(destination)
        if any(s.kind == "email" and s.kind not in keep for s in self.redactor.find(value)):
            return None
        return value

    def item(self, item: DeliveryItem, destination: str | None) -> DeliveryItem:
        """The item as ``destination`` may see it: text, author and links redacted.

        When the author's handle or name had to be redacted, ``author_key`` becomes a stable
        pseudonym (``anon:<hash>``), so a destination still recognises the same person (joins
        their tickets, counts their praise) without learning who they are.
        """
        author = item.author
        redacted = Author(
            handle=self.optional(author.handle, destination),
            name=self.optional(author.name, destination),
            url=self.link(author.url, destination),
            followers=author.followers,
        )
        ref = item.author_ref
        if (redacted.handle, redacted.name, redacted.url) != (
            author.handle,
            author.name,
            author.url,
        ):
            ref = "anon:" + stable_key(item.author_key)[:20]
        return dataclasses.replace(
            item,
            text=self.text(item.text, destination),
            author=redacted,
            url=self.link(item.url, destination),
            author_ref=ref,
        )

    def tree(self, value: Any, destination: str | None) -> Any:
        """``value`` with every string in it redacted for ``destination``: for built reports.

        Walks dataclasses (rebuilt with :func:`dataclasses.replace`), tuples, lists and dicts
        (values only); anything else is returned as is. Strings without personal data come back
        unchanged, so identifiers, labels and URLs without e-mail addresses are untouched.
        """
        if isinstance(value, str):
            return self.text(value, destination)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {
                f.name: self.tree(getattr(value, f.name), destination)
                for f in dataclasses.fields(value)
                if f.init
            }
            return dataclasses.replace(value, **changes)
        if isinstance(value, tuple):
            return tuple(self.tree(v, destination) for v in value)
        if isinstance(value, list):
            return [self.tree(v, destination) for v in value]
        if isinstance(value, dict):
            return {k: self.tree(v, destination) for k, v in value.items()}
        return value
