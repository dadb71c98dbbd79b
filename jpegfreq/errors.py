"""The one exception type of jpegfreq."""


class JpegError(ValueError):
    """A JPEG could not be read.  The message names the source and the reason.

    Attributes: ``source`` (a path, or ``"<bytes: N>"``), ``reason`` (libjpeg's
    or jpegfreq's explanation) and ``kind`` (``"jpeg"``, ``"limit"``,
    ``"unsupported"``, ``"io"``).
    """

    def __init__(self, source, reason, kind="jpeg"):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.kind = kind

    def __reduce__(self):  # picklable across DataLoader workers
        return (type(self), (self.source, self.reason, self.kind))
