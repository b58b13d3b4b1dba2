"""The directory's allow list: the node identities an operator admits.

A text file, UTF-8, one identity key (base58) a line, optionally followed
by whitespace and a label; ``#`` starts a comment; blank lines are skipped.
A key listed twice is one entry. docs/trust.md, "Allow list".
"""

import attrs

from nymtx.keys import KeyFormatError
from nymtx.trust.identity import decode_identity_key, encode_b58

#: An allow list names nodes an operator knows; a bigger file is a mistake.
MAX_ALLOW_LIST_SIZE = 1024 * 1024
MAX_LABEL_LENGTH = 200


class AllowListError(ValueError):
    """An allow list that cannot be read; the message names the line."""


@attrs.frozen
class AllowList:
    """Identity keys (32 bytes) mapped to their labels ("" if none)."""

    labels: dict = attrs.field(factory=dict)

    def __contains__(self, identity_key):
        return identity_key in self.labels

    def __len__(self):
        return len(self.labels)

    @classmethod
    def parse(cls, data, name="the allow list"):
        """An AllowList from the file's bytes (or text)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if len(data) > MAX_ALLOW_LIST_SIZE:
            raise AllowListError(f"{name} is {len(data)} bytes; the limit is "
                                 f"{MAX_ALLOW_LIST_SIZE}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise AllowListError(f"{name} is not UTF-8 (byte {e.start})")
        labels = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            key_text, *rest = line.split(None, 1)
            label = rest[0].strip() if rest else ""
            try:
                key = decode_identity_key(key_text, "the identity key")
            except KeyFormatError as e:
                raise AllowListError(f"{name}, line {number}: {e}")
            if len(label) > MAX_LABEL_LENGTH or not label.isprintable():
                raise AllowListError(f"{name}, line {number}: the label must be at most "
                                     f"{MAX_LABEL_LENGTH} printable characters")
            labels.setdefault(key, label)
        return cls(labels)

    @classmethod
    def load(cls, path):
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_ALLOW_LIST_SIZE + 1)
        except OSError as e:
            raise AllowListError(f"cannot read the allow list {path}: {e.strerror}")
        return cls.parse(data, f"allow list {path}")

    def render(self):
        """The file's text for these entries (parse(render()) == self)."""
        lines = ["# nymtx allow list: one node identity key (base58) a line, then a label"]
        for key, label in self.labels.items():
            lines.append(f"{encode_b58(key)} {label}".rstrip())
        return "\n".join(lines) + "\n"
