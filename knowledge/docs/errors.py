"""One error tree for the documents boundary: everything ingestion refuses or fails on is a
``DocumentError`` whose message can be shown to an admin as it is."""

from __future__ import annotations


class DocumentError(Exception):
    """A source could not be read, fetched or indexed (the message says why)."""


class ExtractError(DocumentError):
    """The bytes are not a document we can read (unknown type, damaged, encrypted, empty)."""


class TooLarge(DocumentError):
    """A file or a page is over its size limit."""


class FetchError(DocumentError):
    """A URL could not be fetched (network, timeout, HTTP status)."""


class BlockedAddress(FetchError):
    """The URL is not http(s), or resolves to a loopback, private or link-local address."""


class RobotsDisallowed(FetchError):
    """robots.txt forbids fetching the URL."""
