"""The signature's keyed randomness: HMAC-SHA256 streams derived from the owner's secret.

Everything a thief would need to find or read a keyed signature — which kernels hold it
and how its bits are scrambled — comes from one secret (derived from the key's) through
HMAC-SHA256 in counter mode with domain-separated labels::

    block_j = HMAC-SHA256(secret, b"hf_lottery_verify/signature/v1\\x00" + label + b"\\x00" + j.to_bytes(8, "big"))

Labels in use: ``b"whiten/<copy>"`` (the whitening stream of one copy) and
``b"slots/<copy>/<stage>"`` (the slot positions of one copy). Nothing here touches
torch's, numpy's or Python's global random state, and nothing depends on ``hash()`` or set
order, so the same secret gives the same bytes in every process and on every machine.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np

from ..errors import SignatureError

__all__ = ["KeyedStream", "whitening_stream", "keyed_sample"]

_DOMAIN = b"hf_lottery_verify/signature/v1\x00"


class KeyedStream:
    """An endless pseudo-random byte stream, ``HMAC-SHA256(secret, domain ‖ label ‖ counter)``.

    Args:
        secret (`bytes`): The owner's secret.
        label (`bytes`): Domain-separation label (what the stream is for).

    Example:
        >>> a = KeyedStream(b"k" * 32, b"whiten/0").read(40)
        >>> a == KeyedStream(b"k" * 32, b"whiten/0").read(40) != KeyedStream(b"k" * 32, b"whiten/1").read(40)
        True
    """

    def __init__(self, secret: bytes, label: bytes) -> None:
        self._mac = hmac.new(secret, _DOMAIN + label + b"\x00", hashlib.sha256)
        self._counter = 0
        self._buffer = b""

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes of the stream."""
        blocks = [self._buffer]
        have = len(self._buffer)
        while have < n:
            mac = self._mac.copy()
            mac.update(self._counter.to_bytes(8, "big"))
            self._counter += 1
            blocks.append(mac.digest())
            have += 32
        data = b"".join(blocks)
        self._buffer = data[n:]
        return data[:n]

    def uint64(self, n: int) -> np.ndarray:
        """The next ``n`` stream words as big-endian unsigned 64-bit integers."""
        return np.frombuffer(self.read(8 * n), dtype=">u8").astype(np.uint64)


def whitening_stream(secret: bytes, copy: int, n: int) -> np.ndarray:
    """The ``n`` whitening bits of one copy (XORed onto the QR data-module bits).

    Args:
        secret (`bytes`): The owner's secret.
        copy (`int`): Copy index (each copy has its own stream).
        n (`int`): Number of bits.

    Returns:
        A boolean array of length ``n``.
    """
    raw = np.frombuffer(KeyedStream(secret, b"whiten/%d" % copy).read((n + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw)[:n].astype(bool)


def keyed_sample(
    secret: bytes,
    label: bytes,
    population: int,
    k: int,
    *,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """``k`` distinct indices of ``range(population)`` in keyed pseudo-random order.

    Draws uniform indices from the keyed stream (exactly uniform: 64-bit words at or above
    the largest multiple of ``population`` are rejected) and keeps each index the first
    time it appears.

    Args:
        secret (`bytes`): The owner's secret.
        label (`bytes`): Domain-separation label.
        population (`int`): Size of the population.
        k (`int`): Sample size.
        exclude (`np.ndarray`, *optional*): Indices that may not be drawn (skipped where the
            stream yields them, so the draw is the same as without them wherever they are not hit).

    Returns:
        An ``int64`` array of ``k`` distinct indices, in draw order.

    Raises:
        SignatureError: ``k`` indices cannot be drawn (population too small).
    """
    if k < 0 or population < 0:
        raise SignatureError(f"Cannot draw {k} of {population} positions.")
    taken = np.zeros(population, dtype=bool)
    if exclude is not None and len(exclude):
        taken[np.asarray(exclude, dtype=np.int64)] = True
    reachable = population - int(taken.sum())
    if k > reachable:
        raise SignatureError(f"Cannot draw {k} distinct positions from {reachable} available ones.")
    stream = KeyedStream(secret, label)
    limit = np.uint64((2**64 // population) * population - 1) if population else np.uint64(0)
    out: list[int] = []
    while len(out) < k:
        words = stream.uint64(max(64, 2 * (k - len(out))))
        for idx in (words[words <= limit] % np.uint64(population)).tolist():
            if taken[idx]:
                continue
            taken[idx] = True
            out.append(idx)
            if len(out) == k:
                break
    return np.asarray(out, dtype=np.int64)
