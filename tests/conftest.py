"""Fixtures shared by the reader, geometry and cube tests (JPEGs come from jpeg_factory)."""
import contextlib
import os
import tempfile

import numpy as np
import pytest

import jpegfreq
import jpegfreq.pipeline


def _rel_rms(got, ref):
    """sqrt(sum (got - ref)^2 / sum ref^2), in float64: docs/design.md's relative error."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    den = float(np.sum(ref * ref))
    num = float(np.sum((got - ref) ** 2))
    return np.sqrt(num / den) if den > 0 else np.sqrt(num)


@pytest.fixture(scope="session")
def rel_rms():
    """rel_rms(got, ref): relative RMS difference (0 when equal; absolute RMS if ref is all 0)."""
    return _rel_rms


@contextlib.contextmanager
def _captured_fd2():
    """Redirect file descriptor 2 (what libjpeg's default output_message writes to) to a file.

    Yields a list that, on exit, holds the bytes written to fd 2 meanwhile.
    """
    out = []
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read())


@pytest.fixture
def captured_stderr():
    """Context manager: ``with captured_stderr() as got: ...``; then got[0] is what reached fd 2."""
    return _captured_fd2


@pytest.fixture
def fresh_fallback_notice():
    """Forget which spatial-fallback notices were shown, before and after the test."""
    jpegfreq.pipeline._noticed.clear()
    yield
    jpegfreq.pipeline._noticed.clear()


@pytest.fixture
def pixel_limit():
    """Restores the process-wide pixel limit after a test that changes it."""
    saved = jpegfreq.get_max_pixels()
    yield
    jpegfreq.set_max_pixels(saved)


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch intra-op thread for a module's tests: on two shared cores, OpenMP
    barriers between two threads cost more than they gain (the model tests)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
