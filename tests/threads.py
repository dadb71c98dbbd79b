"""Running one test body on several threads at once (the thread-safety tests share it)."""
import threading


def run_in_threads(fn, n, timeout=300):
    """Call fn(0) .. fn(n - 1) on n threads started together; wait for all of them.

    A thread still running after ``timeout`` seconds fails the test as hung.  Exceptions
    inside fn are the caller's to collect (a thread cannot raise into the test)."""
    pool = [threading.Thread(target=fn, args=(t,)) for t in range(n)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout=timeout)
    assert not any(th.is_alive() for th in pool), "a thread hung"
