"""Hash a download while it is written, so verifying it needs no second pass.

An S3 ETag is the md5 of the data (one PUT) or the md5 of the md5s of its parts
(``-N``). When download ranges start on part boundaries, each range can hash its
parts as the bytes arrive; the parts' digests give the ETag at the end. Anything
that breaks the sequence (a range resumed mid-way after a restart) makes the result
unknown, and the caller falls back to hashing the file.
"""

from __future__ import annotations

import hashlib

from ..hashing import multipart_etag


class InlineETag:
    def __init__(self, size: int, etag: str, part: int) -> None:
        self.size, self.etag, self.part = size, etag, max(part, 1)
        self.multipart = "-" in etag
        self._open: dict[int, tuple[int, hashlib._Hash]] = {}  # part -> (bytes hashed, md5)
        self._done: dict[int, bytes] = {}
        self.broken = False

    def feed(self, offset: int, data: bytes | memoryview) -> None:
        """Bytes written at ``offset``; each part must be fed in order from its start."""
        view = memoryview(data)
        while view and not self.broken:
            idx, within = divmod(offset, self.part)
            have, md5 = self._open.get(idx, (0, hashlib.md5()))
            if have != within:
                self.broken = True  # a gap: this part's digest cannot be known
                return
            take = min(len(view), min(self.part, self.size - idx * self.part) - within)
            md5.update(view[:take])
            have += take
            if have == min(self.part, self.size - idx * self.part):
                self._done[idx] = md5.digest()
                self._open.pop(idx, None)
            else:
                self._open[idx] = (have, md5)
            view, offset = view[take:], offset + take

    def result(self) -> str | None:
        """The ETag of what was fed, or None when it cannot be known."""
        if self.size == 0 and not self.broken:
            return hashlib.md5().hexdigest()
        count = -(-self.size // self.part)
        if self.broken or len(self._done) != count:
            return None
        digests = [self._done[i] for i in range(count)]
        if not self.multipart:
            return digests[0].hex() if count == 1 else None
        return multipart_etag(digests)
